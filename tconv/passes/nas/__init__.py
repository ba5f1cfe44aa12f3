"""NAS rewrites: passes that change *what* a convolution computes.

Each pass is an xDSL `ModulePass` (`tconv-group`, `tconv-bottleneck`, ...)
built on the shared pieces of this package:

- `select`: which convolutions a pass rewrites (the `layers` option);
- `channels`: how a change of a convolution's output channels reaches its
  consumers (batch-norm, the next convolution, the classifier, concat);
- `store`: the parameter values a pass reads (Fisher ranking) and writes
  (sliced weights under new names);
- `legality`: the capacity check every pass can be asked to make;
- `nas_pass`: the base class that ties them together.

A rewritten parameter always gets a new name, so a parameter store completed
against the rewritten IR initialises it from its `init` instead of binding a
stale entry of another shape or meaning.
"""
