"""dermstack.mlp: ``kind = "mlp"``, a small torch MLP on frozen embeddings plus table features
(:mod:`dermstack.mlp.net`; its params schema, torch-free: :mod:`dermstack.mlp.params`), cross-validated on
the linear probe's Design and registered in :mod:`dermstack.mlp.kind`."""
