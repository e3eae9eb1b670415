"""Built-in endpoints (plugins of group ``radlogger.endpoints``)."""
