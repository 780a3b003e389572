"""Serving: the runtime that runs inside a bento. Load a model artifact and answer top-k requests
(``recommender``, ``runtime``, ``http``), read online user features (``online``, ``features``) and bind to the
store at start (``startup``). ``testing`` writes example artifacts for tests and benches and is not shipped in
bentos; running and calling a built bento is ``recsys.registry.serve``."""
