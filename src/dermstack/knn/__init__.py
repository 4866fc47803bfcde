"""dermstack.knn: ``kind = "knn"``, the label mean of the nearest training rows in embedding space
(:mod:`dermstack.knn.neighbours`), a member and a giver of the boosters' ``knn`` feature group, registered
in :mod:`dermstack.knn.kind`."""
