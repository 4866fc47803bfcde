"""dermstack.mlp: ``kind = "mlp"``, a small torch MLP on frozen embeddings plus table features
(:mod:`dermstack.mlp.net`), cross-validated on the linear probe's Design and registered in :mod:`dermstack.mlp.kind`."""
