"""Ready-made applications of lns_keras: model builders, data pipelines, training entry points."""
