package PVE::Storage::Plugin;

# Stand-in for pve-storage's PVE::Storage::Plugin: the base class, the shared
# storage list, and the property names the built-in plugins already declare
# (a plugin must not declare them again: PVE's init dies on a duplicate).
use strict;
use warnings;

our @SHARED_STORAGE = qw(iscsi nfs cifs rbd cephfs iscsidirect glusterfs zfs drbd pbs);

# Property names declared by pve-storage's built-in plugins (Plugin.pm, RBDPlugin.pm,
# and the others), which custom plugins may list in options() but not redeclare.
our @EXISTING_PROPERTIES = qw(
    type storage nodes content disable format maxfiles shared subdir path export server
    options monhost pool data-pool namespace username authsupported krbd keyring
    bwlimit vgname thinpool blocksize sparse preallocation mkdir is_mountpoint
    prune-backups max-protected-backups fingerprint encryption-key master-pubkey password
);

sub new { my ($class) = @_; return bless {}, $class; }

1;
