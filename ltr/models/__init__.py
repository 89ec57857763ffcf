"""Neural ranking models and their training objectives (losses live in ``ltr.models.losses``)."""
