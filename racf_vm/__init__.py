"""racf-vm: boot a per-job virtual machine from an HTCondor vanilla job."""
