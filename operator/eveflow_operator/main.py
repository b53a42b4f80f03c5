"""Entry module for plain ``kopf run -m eveflow_operator.main`` (``eveflow operator`` is preferred).

Registers on kopf's default registry, after loading settings. Prefer ``eveflow operator``: it
uses a private registry, so handlers other libraries put on the default one (prefect-kubernetes'
observer) do not run here.
"""

from eveflow_operator.handlers import register, warm_up
from eveflow_operator.settings import load_settings

warm_up()
register(load_settings())
