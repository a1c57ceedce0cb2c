"""First-boot provisioning of a machine the way users do it: Ignition or cloud-config."""
