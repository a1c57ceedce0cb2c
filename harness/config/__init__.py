"""First-boot configs: Butane -> Ignition (`butane`, `ignition`) and Kairos cloud-config.

Everything here runs on the host, before a VM boots, so that a bad config is an exit-2
message naming the file, line and key instead of a guest that never comes up.
"""
