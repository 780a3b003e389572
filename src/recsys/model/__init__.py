"""Model stage: BERT item-text encoder, two-tower retrieval model, training, evaluation and the artifact.

Submodules import TensorFlow/Keras lazily (inside functions) or at their top; importing this package itself
is cheap. Typical use::

    from recsys.model.encoder import encode_items
    from recsys.model.train import train, export_artifact, recommend
    from recsys.artifact import load_artifact
    from recsys.model.evaluate import temporal_split, evaluate_side_by_side
"""
