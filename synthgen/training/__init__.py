"""Diffuse training and the audit.

* :mod:`~synthgen.training.tasks`: task files (a prompt, its valid targets and their weights);
* :mod:`~synthgen.training.recipe_tasks`: tasks built from a recipe's closed-set fields;
* :mod:`~synthgen.training.config`: the training config and the tasks it selects;
* :mod:`~synthgen.training.loop`: the loss and the training loop (:func:`~synthgen.training.loop.train`);
* :mod:`~synthgen.training.distributed`: data parallel over processes;
* :mod:`~synthgen.training.preserve`: anchors that keep ordinary answers close to the base model;
* :mod:`~synthgen.training.audit`: how diffuse a model is (:func:`~synthgen.training.audit.run_audit`).
"""
