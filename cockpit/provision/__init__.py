"""Configuring nodes with Ansible: playbook runs through ansible-runner and the progress they report."""
