"""systemd-sysupdate update channels: what distributions publish, served from the host.

`model` describes a channel (layout, components, versions), `transfer` writes the guest's
transfer files, `signing` makes a per-run GPG key, and `channel` builds, publishes,
signs and tampers with the images the guest's systemd-sysupdate downloads.
"""
