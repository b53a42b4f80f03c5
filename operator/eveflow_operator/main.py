"""Entry module for ``kopf run -m eveflow_operator.main``: load settings, then register handlers."""

from eveflow_operator.handlers import register
from eveflow_operator.settings import load_settings

register(load_settings())
