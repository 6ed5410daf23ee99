"""The controller's metrics: their own registry and live gauges (the
endpoint: tests/unit/test_prometheus.py, and the real process scraped in
tests/functional/k8s/test_ipam_controller.py)."""

from vmetal_ironic.ipam_controller import metrics as metrics_mod


def test_two_controllers_in_one_process_do_not_collide():
    first, second = metrics_mod.Metrics(), metrics_mod.Metrics()
    first.steps.labels('follow', 'ok').inc()
    assert second.registry.get_sample_value(
        'vmetal_ipam_controller_steps_total',
        {'step': 'follow', 'result': 'ok'}) is None


def test_gauges_read_the_live_values_when_scraped():
    metrics = metrics_mod.Metrics()
    depth, leading = [3], [False]
    metrics.follow_queue(lambda: depth[0])
    metrics.follow_leading(lambda: leading[0])
    depth[0], leading[0] = 7, True
    text = metrics.render()
    assert 'vmetal_ipam_controller_queue_depth 7.0' in text
    assert 'vmetal_ipam_controller_leading 1.0' in text


def test_skipped_objects_are_counted_by_kind_and_reason():
    metrics = metrics_mod.Metrics()
    metrics.skipped.labels('BareMetalHost', 'consumer_ref').inc()
    assert ('vmetal_ipam_controller_skipped_objects_total{kind="BareMetalHost"'
            ',reason="consumer_ref"} 1.0') in metrics.render()
