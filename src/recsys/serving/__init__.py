"""Serving: load a model artifact and answer top-k requests (``recommender``), read online user features
(``features``), and run or call a built bento (``client``). BentoML itself appears only in ``bentos/`` and
``client`` (as a subprocess)."""
