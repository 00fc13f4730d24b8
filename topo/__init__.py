"""topo: RabbitMQ messaging topology as code."""

__version__ = "0.1.0"
