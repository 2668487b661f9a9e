"""GUNN networks: the GunnLayer, the registry of -netType names, and setup as in models/init.lua."""
from .gunn import get_model, list_models, register_model
from .gunn_layer import GunnLayer
from .setup import check_classes, create, gunn_layers, load_model_state, lua_string, setup

__all__ = ['GunnLayer', 'check_classes', 'create', 'get_model', 'gunn_layers', 'list_models',
           'load_model_state', 'lua_string', 'register_model', 'setup']
