"""larq 0.14's own test files, ported to Keras 3 at run time and run against lns_keras.

larq ships its tests in its wheel (`larq/*_test.py`). Nothing of them is stored here:
[`transform`](transform.py) reads them from the installed larq (found without importing
it), rewrites them mechanically into a temporary folder, and
`tests/test_larq_suite.py` runs that folder with pytest under Keras 3. What is ours:

- `transform.py`: the rewriting rules, each with the reason Keras 3 needs it;
- `shim.py`: larq's module names (`lq.layers`, `lq.quantizers`, ...) mapped onto
  lns_keras's;
- `models.py`: larq's `ModelProfile` (what its summary tests read), answered from
  `lns_keras.model_stats`;
- `keras2.py`: the few Keras 2 backend helpers the tests call (placeholders, graph
  functions), written on Keras 3;
- `testing_utils.py`: our own versions of the test helpers larq's tests import
  (`layer_test`, `random_input`, ...) and of TensorFlow's `get_test_data`;
- `fixtures.py`: the fixtures of larq's conftest (and of the pytest plugins its tests
  use: `mocker`, `snapshot`), for Keras 3;
- `snapshots.py`: larq's printed summaries, recorded by running larq's own test
  functions under larq (the oracle interpreter), and the comparison of ours with them.
"""
