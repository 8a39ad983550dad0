"""The GLUE study: MASS on BERT (MinTau routing + adaptive expert expansion) against dense
fine-tuning and a GMoE-style MoE, on GLUE tasks and on embedded offline text tasks.

Torch-free modules (read while the workflow parses): :mod:`~moebench.glue.study`,
:mod:`~moebench.glue.params`. The rest imports torch / transformers when used.
"""
