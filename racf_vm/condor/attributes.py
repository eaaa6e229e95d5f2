"""ClassAd attribute names racf-vm shares with HTCondor configurations and submit files.

Names only: what the node advertises (STARTD_CRON) and what jobs and hooks set. Matching
is done by HTCondor (and by classad2 in the tests), never by code of ours.
"""

# -- the machine ad (the STARTD_CRON advertiser, racf_vm.condor.nodead) ---------------
PREFIX = "RacfVM"  # every attribute racf-vm defines starts with it
# The images a job can run on this node: a ClassAd list of names, {"busybox", "debian12"},
# matched with member("NAME", TARGET.RacfVMImages) (classad2 has member(), not the
# stringListMember of HTCondor's own library).
ATTR_IMAGES = PREFIX + "Images"
# True when this node can run racf-vm jobs at all.
ATTR_READY = PREFIX + "CanRun"

# -- the job ad ------------------------------------------------------------------------
ATTR_VM_IMAGE = "VM_Image"  # catalog image name (+VM_Image = "NAME")
ATTR_VM_COMMAND = "VM_Command"  # what runs in the guest (the wrapper form)
ATTR_VM_ARGS = "VM_Args"  # its arguments, HTCondor V1/V2 syntax (racf_vm.condor.arguments)
ATTR_STAGED = "RacfVMStaged"  # sandbox file PREPARE_JOB made; JOB_EXIT removes it
ATTR_STAGED_IMAGE = "RacfVMStagedImage"  # the catalog image PREPARE_JOB staged

# -- attributes HTCondor itself defines (job ad) -----------------------------------------
ATTR_CMD = "Cmd"
ATTR_ARGUMENTS = "Arguments"  # V2 raw syntax
ATTR_ARGS = "Args"  # V1 syntax (older submit files)
ATTR_JOB_UNIVERSE = "JobUniverse"  # 5 vanilla, 13 vm
ATTR_TRANSFER_EXECUTABLE = "TransferExecutable"
ATTR_TRANSFER_INPUT = "TransferInput"
ATTR_REQUIREMENTS = "Requirements"
ATTR_HOOK_STATUS_CODE = "HookStatusCode"
ATTR_HOOK_STATUS_MESSAGE = "HookStatusMessage"
# the VM universe (condor_submit and condor_vm-gahp)
ATTR_VM_NAME = "VMPARAM_VM_NAME"
ATTR_VM_WORKING_DIR = "VM_WORKING_DIR"
ATTR_VM_DISK = "VMPARAM_vm_Disk"
ATTR_VM_MEMORY = "JobVMMemory"
ATTR_VM_VCPUS = "JobVM_VCPUS"
ATTR_REQUEST_MEMORY = "RequestMemory"
ATTR_REQUEST_CPUS = "RequestCpus"
# exit status, copied back to a routed job's source
EXIT_ATTRS = ("ExitCode", "ExitBySignal", "ExitSignal", "ExitStatus")
