"""`playbook watch`: an always-on light sampler writing rolling evidence segments."""
