"""``vmetal-ipam-controller``: the Kubernetes store's controller, apart
from the store.

Ironic conductors only call the store (:mod:`vmetal_ironic.store.
kubernetes`); following the claims (:mod:`.follower`), releasing what
deprovisioned or deleted hosts held and collecting what writers left half
way (the rules, :mod:`.reconciler`) is this controller's job, one active
replica at a time (:mod:`.leader`), host by host from a keyed work queue
(:mod:`.controller`, :mod:`.work_queue`), fed by watches
(:mod:`.informer`), saying what it did on the hosts (:mod:`.events`).
"""
