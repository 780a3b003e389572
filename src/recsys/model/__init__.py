"""Model stage: BERT item-text encoder, two-tower retrieval model, training, evaluation and the artifact.

Submodules import TensorFlow/Keras lazily (inside functions) or at their top; importing this package itself
is cheap and chooses no Keras backend. By concern:

* ``encoder``: BERT item texts -> the embeddings table; ``two_tower``: the Keras towers and training model;
  ``data``: frames -> indexed arrays and ``tf.data``; ``backend``: the TensorFlow guard and device strategy.
* ``build``: settings + inputs -> the compiled model (the seam the accelerator check uses); ``fit``: ``train``
  (fit each member, the item matrix); ``ensemble``: members joined, popularity prior; ``trained``:
  ``TrainedModel``; ``export``: the model artifact; ``inference``: recommend and score functions.
* ``evaluate``: the pipeline's and the gate's holdout metrics; ``protocol``, ``baselines``, ``report``: the
  benchmarks' evaluation protocol (docs/evaluation.md).

Typical use::

    from recsys.model.encoder import encode_items
    from recsys.model.fit import train
    from recsys.model.export import export_artifact
    from recsys.model.inference import recommend, model_scorer
    from recsys.artifact import load_artifact
    from recsys.model.evaluate import temporal_split, evaluate_side_by_side
"""
