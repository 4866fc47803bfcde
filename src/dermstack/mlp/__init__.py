"""``kind = "mlp"``: a small torch MLP on frozen embeddings plus table features (:mod:`dermstack.mlp.net`)."""
