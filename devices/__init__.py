"""Built-in instrument drivers and their simulators (plugins of group ``radlogger.devices``)."""
