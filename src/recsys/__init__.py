"""BERT-based recommender MLOps workflow: sources → lake → dbt → GX → Feast → TF two-tower → BentoML."""

__version__ = "0.1.0"
