"""The GLUE study's methods, one module each, declared with :func:`moebench.declare.declare`
(read without importing; the class is imported when a run builds it)."""
