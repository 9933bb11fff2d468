"""Model-level tools under larq's module name: `lns_keras.models.summary` (larq's
`lq.models.summary`).

The same function as [`lns_keras.summary`][lns_keras.summary.summary]; the counting and
its `compat="larq"` mode are described in [`lns_keras.summary`][lns_keras.summary].

```python
lns_keras.models.summary(model)                 # lns_keras's counting
lns_keras.models.summary(model, compat="larq")  # larq 0.14's figures
```
"""

from lns_keras.summary import summary

__all__ = ["summary"]
