package PVE::Storage::Custom::RBDXPlugin;

# rbdx: Ceph RBD storage for Proxmox VE with CoW clones, the EC data pool on
# every image, O(1) snapshot rollback and snapshots that can be deleted while
# clones use them. This module is a thin shim: every method hands its arguments
# to the rbdx helper (`rbdx pve`) as one JSON request on stdin and reads one
# JSON answer on stdout. Keys and keyrings never go on a command line: the
# helper is told the keyring's *path*.
#
# storage.cfg (hyper-converged; add `monhost` and `--keyring` for an external
# cluster):
#   rbdx: ceph-ec
#       pool rbd
#       data-pool rbd-ec
#       content images,rootdir
#       username admin

use strict;
use warnings;

use Fcntl qw(O_WRONLY O_CREAT O_EXCL);
use JSON::PP;
use PVE::Tools qw(run_command);
use PVE::Storage::Plugin;

use base qw(PVE::Storage::Plugin);

# Listed as shared storage: every node sees the same pool.
push @PVE::Storage::Plugin::SHARED_STORAGE, 'rbdx'
    if !grep { $_ eq 'rbdx' } @PVE::Storage::Plugin::SHARED_STORAGE;

# The newest storage API this plugin was written and tested against.
my $TESTED_APIVER = 15;
my $MIN_APIVER = 9;

# The helper binary and PVE's config tree (overridable for tests and staging).
our $RBDX = $ENV{RBDX_BIN} // '/usr/bin/rbdx';
our $PVE_ETC = $ENV{RBDX_PVE_ETC} // '/etc/pve';
# The warm start: where this socket is (pve-storage-rbdx-agent.socket), the
# helper is `rbdx-run pve`, rbdx-run beside $RBDX; its agent forks the helper
# with the Ceph libraries already loaded. Never with RBDX_BIN.
our $AGENT_SOCKET = defined $ENV{RBDX_BIN} ? undef : '/run/rbdx/pve.sock';

sub api {
    my $apiver = eval { PVE::Storage::APIVER() };
    return $TESTED_APIVER if !defined($apiver);
    # Speak the running PVE's version when we know it. A newer PVE is told the
    # newest version this plugin was tested with: it loads the plugin only while
    # that is inside its accepted window (APIVER - APIAGE), never as "current"
    # after an APIAGE reset. An older one than we support refuses it clearly.
    return $apiver if $apiver <= $TESTED_APIVER;
    return $TESTED_APIVER;
}

sub type { return 'rbdx'; }

sub plugindata {
    return {
        content => [{ images => 1, rootdir => 1 }, { images => 1 }],
        'sensitive-properties' => { keyring => 1 },
    };
}

# Only new, prefixed properties: pool, data-pool, namespace, monhost, username,
# krbd, keyring, content, nodes and disable already exist (the RBD plugin owns
# them) and redeclaring one would break every PVE daemon.
sub properties {
    return {
        'rbdx-timeout' => {
            description => "Seconds one Ceph call of the rbdx helper may take.",
            type => 'integer',
            minimum => 1,
            optional => 1,
        },
        'rbdx-rollback-max-mb' => {
            description => "A rollback is done in place when the image holds the snapshot"
                . " and at most this many MiB of its own data plus what changed since"
                . " (0: always the constant-time clone swap).",
            type => 'integer',
            minimum => 0,
            default => 2048,
            optional => 1,
        },
    };
}

sub options {
    return {
        nodes => { optional => 1 },
        disable => { optional => 1 },
        content => { optional => 1 },
        pool => { optional => 1 },
        'data-pool' => { optional => 1 },
        namespace => { optional => 1 },
        monhost => { optional => 1 },
        username => { optional => 1 },
        krbd => { optional => 1 },
        keyring => { optional => 1 },
        bwlimit => { optional => 1 },
        'rbdx-timeout' => { optional => 1 },
        'rbdx-rollback-max-mb' => { optional => 1 },
    };
}

# --- Ceph access, as pve-storage's CephConfig sets it up -----------------------
#
# Hyper-converged (no monhost): $PVE_ETC/ceph.conf. External (monhost): the
# monitors from storage.cfg and $PVE_ETC/priv/ceph/<storeid>.conf, which names
# the keyring; the keyring is $PVE_ETC/priv/ceph/<storeid>.keyring either way.
# Same file names and contents as the built-in rbd type, so that rbd and qemu
# see what the helper sees.

sub priv_dir { return "$PVE_ETC/priv/ceph"; }
sub keyring_file { my ($storeid) = @_; return priv_dir() . "/$storeid.keyring"; }
sub conf_file { my ($storeid) = @_; return priv_dir() . "/$storeid.conf"; }

# host[:port], [v6][:port] or a bare v6 address: (host, port or undef).
sub parse_host_and_port {
    my ($hp) = @_;
    return ($1, $2) if $hp =~ m/^\[([^\]]+)\](?::(\d+))?$/;
    return ($hp, undef) if ($hp =~ tr/://) > 1;
    return ($1, $2) if $hp =~ m/^([^:]+)(?::(\d+))?$/;
    return (undef, undef);
}

# The monitors of `monhost`, joined by $sep, IPv6 addresses in brackets.
sub hostlist {
    my ($monhost, $sep) = @_;
    my @hosts;
    for my $m (PVE::Tools::split_list($monhost)) {
        my ($host, $port) = parse_host_and_port($m);
        next if !defined $host;
        $host = "[$host]" if $host =~ m/:/;
        push @hosts, $host . (defined $port ? ":$port" : '');
    }
    return join($sep, @hosts);
}

sub ceph_options {
    my ($storeid, $scfg) = @_;
    my $keyring = keyring_file($storeid);
    my $o = {
        pool => $scfg->{pool} // 'rbd',
        id => $scfg->{username} // 'admin',
    };
    if ($scfg->{monhost}) {
        # A storage added before its configuration existed gets one now.
        create_configuration($storeid) if !-e conf_file($storeid);
        $o->{conf} = conf_file($storeid) if -e conf_file($storeid);
        $o->{mon_host} = hostlist($scfg->{monhost}, ',');
    } else {
        $o->{conf} = "$PVE_ETC/ceph.conf";
    }
    $o->{data_pool} = $scfg->{'data-pool'} if defined $scfg->{'data-pool'};
    $o->{namespace} = $scfg->{namespace} if defined $scfg->{namespace};
    $o->{keyring} = $keyring if -e $keyring;
    $o->{auth_supported} = defined $o->{keyring} ? 'cephx' : 'none';
    $o->{timeout} = $scfg->{'rbdx-timeout'} + 0 if defined $scfg->{'rbdx-timeout'};
    $o->{rollback_max_mb} = $scfg->{'rbdx-rollback-max-mb'} + 0 if defined $scfg->{'rbdx-rollback-max-mb'};
    return $o;
}

# --- talking to the helper -------------------------------------------------

sub request {
    my ($storeid, $scfg, $method, $params, $ceph_extra) = @_;
    my $ceph = ceph_options($storeid, $scfg);
    my $auth = delete $ceph->{auth_supported};
    $ceph->{auth_none} = JSON::PP::true if $auth eq 'none';
    %$ceph = (%$ceph, %$ceph_extra) if $ceph_extra;
    return JSON::PP->new->canonical->encode({
        version => 1,
        storeid => "$storeid",
        ceph => $ceph,
        method => $method,
        params => $params // {},
    });
}

# The helper's command and what its environment adds (only the socket's path).
sub helper_command {
    (my $run = $RBDX) =~ s{[^/]*$}{rbdx-run};
    return ([$run, 'pve'], { RBDX_AGENT_SOCKET => $AGENT_SOCKET })
        if defined $AGENT_SOCKET && -S $AGENT_SOCKET && -x $run;
    return ([$RBDX, 'pve'], {});
}

# Runs the helper with run_command's options; returns the program run.
sub run_helper {
    my (%opt) = @_;
    my ($cmd, $env) = helper_command();
    local @ENV{ keys %$env } = values %$env;
    run_command($cmd, %opt);
    return $cmd->[0];
}

sub helper_timeout {
    my ($scfg) = @_;
    return ($scfg->{'rbdx-timeout'} // 60) * 10;
}

# Runs one helper call; dies with the helper's one-line error. A volume name
# outside the grammar dies here, before the helper is started.
sub rbdx_call {
    my ($storeid, $scfg, $method, $params, %opt) = @_;
    for my $k (qw(volname target_volname)) {
        __PACKAGE__->parse_volname($params->{$k}) if defined $params && defined $params->{$k};
    }
    my ($out, $err) = ('', '');
    my $program = run_helper(
        input => request($storeid, $scfg, $method, $params, $opt{ceph}) . "\n",
        outfunc => sub { $out .= shift },
        errfunc => sub { $err .= shift . "\n" },
        timeout => $opt{timeout} // helper_timeout($scfg),
        noerr => 1,
    );
    my $resp = eval { decode_json($out) };
    if (!$resp) {
        $err =~ s/\s+/ /g;
        die "rbdx $method: no answer from $program" . ($err ? ": $err" : '') . "\n";
    }
    die "$resp->{error}\n" if !$resp->{ok};
    warn $err if $err ne '';    # e.g. a reclaim after free_image that failed
    return $resp->{result};
}

# --- volumes -----------------------------------------------------------------

# One grammar with the helper (pve-plugin/src/volname.rs, golden/volnames.json):
# [base-<vmid>-<rest>/](vm|base)-<vmid>-<rest>, <rest> without whitespace, '/'
# or '@' and never rbdx's internal '.rbdx-'. The owner reported here is the one
# the helper derives and acts on.
my $VMID = qr/(?:0|[1-9]\d{0,8})/;
my $REST = qr/[^\s\/\@]+/;

sub parse_volname {
    my ($class, $volname) = @_;
    if (defined($volname) && $volname !~ m/\.rbdx-/
        && $volname =~ m/^(?:(base-($VMID)-$REST)\/)?((vm|base)-($VMID)-$REST)\z/) {
        my ($basename, $basevmid, $name, $kind, $vmid) = ($1, $2, $3, $4, $5);
        my $isBase = $kind eq 'base' ? 'base' : undef;
        return ('images', $name, $vmid + 0, $basename, defined($basevmid) ? $basevmid + 0 : undef, $isBase, 'raw');
    }
    die "unable to parse rbdx volume name '" . ($volname // '') . "'\n";
}

sub image_name {
    my ($volname) = @_;
    my (undef, $name) = PVE::Storage::Custom::RBDXPlugin->parse_volname($volname);
    return $name;
}

# The image that holds snapshot $snap of $volname: the volume's own image, or,
# after a rollback, the older image of the disk that kept it.
sub snapshot_image {
    my ($storeid, $scfg, $volname, $snap) = @_;
    return rbdx_call($storeid, $scfg, 'snapshot_image', { volname => $volname, snap => $snap });
}

# QEMU's librbd path (PVE 8): rbd:<pool>[/<ns>]/<image>[@snap]:conf=…
# [:mon_host=…:auth_supported=…][:id=…:keyring=…], as the built-in rbd type.
sub path {
    my ($class, $scfg, $volname, $storeid, $snapname) = @_;
    my ($vtype, $name, $vmid) = $class->parse_volname($volname);
    if ($scfg->{krbd}) {
        # /dev/rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap], with the image that
        # holds the snapshot (after a rollback, an older image of the disk).
        my $dev = rbdx_call($storeid, $scfg, 'device_path', { volname => $volname, snap => $snapname });
        return ($dev, $vmid, $vtype);
    }
    my $o = ceph_options($storeid, $scfg);
    $name = snapshot_image($storeid, $scfg, $volname, $snapname) if $snapname;
    my $esc = sub { my $s = shift; $s =~ s/([\\:])/\\$1/g; return $s };
    my $path = "rbd:" . $esc->($o->{pool});
    $path .= "/" . $esc->($o->{namespace}) if defined $o->{namespace};
    $path .= "/" . $esc->($name);
    $path .= "\@" . $esc->($snapname) if $snapname;
    $path .= ":conf=" . $esc->($o->{conf}) if $o->{conf};
    if ($scfg->{monhost}) {
        $path .= ":mon_host=" . $esc->(hostlist($scfg->{monhost}, ';'));
        $path .= ":auth_supported=" . ($o->{keyring} ? 'cephx' : 'none');
    }
    if ($o->{keyring}) {
        $path .= ":id=" . $esc->($o->{id}) . ":keyring=" . $esc->($o->{keyring});
    }
    return ($path, $vmid, $vtype);
}

# PVE 9: the rbd block driver (servers and auth for external clusters), or the
# krbd device.
sub qemu_blockdev_options {
    my ($class, $scfg, $storeid, $volname, $machine_version, $options) = @_;
    my (undef, $name) = $class->parse_volname($volname);
    my $snap = $options->{'snapshot-name'};
    if ($scfg->{krbd}) {
        my ($dev) = $class->path($scfg, $volname, $storeid, $snap);
        return { driver => 'host_device', filename => $dev };
    }
    my $o = ceph_options($storeid, $scfg);
    $name = snapshot_image($storeid, $scfg, $volname, $snap) if $snap;
    my $b = { driver => 'rbd', pool => "$o->{pool}", image => "$name" };
    $b->{conf} = "$o->{conf}" if $o->{conf};
    $b->{namespace} = "$o->{namespace}" if defined $o->{namespace};
    $b->{snapshot} = "$snap" if $snap;
    if ($scfg->{monhost}) {
        my @server;
        for my $m (PVE::Tools::split_list($scfg->{monhost})) {
            my ($host, $port) = parse_host_and_port($m);
            push @server, { host => "$host", port => defined $port ? "$port" : '3300' } if defined $host;
        }
        $b->{server} = \@server;
        $b->{'auth-client-required'} = [$o->{keyring} ? 'cephx' : 'none'];
    }
    $b->{user} = "$o->{id}" if $o->{keyring};
    # SPI flash does many read-modify-writes: without writeback it is very slow.
    rbdx_call($storeid, $scfg, 'cache_writeback', { volname => $volname })
        if $options->{hints} && $options->{hints}->{'efi-disk'};
    return $b;
}

sub alloc_image {
    my ($class, $storeid, $scfg, $vmid, $fmt, $name, $size) = @_;
    die "illegal format '$fmt' - rbdx stores raw images\n" if $fmt && $fmt ne 'raw';
    # $size is in KiB.
    return rbdx_call($storeid, $scfg, 'alloc_image', { vmid => $vmid + 0, name => $name, size_kib => $size + 0 });
}

sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;
    rbdx_call($storeid, $scfg, 'free_image', { volname => $volname });
    return undef;
}

sub clone_image {
    my ($class, $scfg, $storeid, $volname, $vmid, $snap) = @_;
    return rbdx_call($storeid, $scfg, 'clone_image', { volname => $volname, vmid => $vmid + 0, snap => $snap });
}

sub create_base {
    my ($class, $storeid, $scfg, $volname) = @_;
    return rbdx_call($storeid, $scfg, 'create_base', { volname => $volname });
}

sub list_images {
    my ($class, $storeid, $scfg, $vmid, $vollist, $cache) = @_;
    my $images = rbdx_call($storeid, $scfg, 'list_images', { defined($vmid) ? (vmid => $vmid + 0) : () });
    my $res = [];
    for my $img (@$images) {
        my $volid = "$storeid:$img->{name}";
        next if $vollist && !grep { $_ eq $volid } @$vollist;
        push @$res, {
            volid => $volid,
            format => 'raw',
            size => $img->{size},
            vmid => $img->{vmid},
            parent => $img->{parent},
        };
    }
    return $res;
}

# Asked every few seconds by pvestatd: a cluster that does not answer within
# $STATUS_TIMEOUT makes the storage inactive instead of blocking the daemon.
our $STATUS_TIMEOUT = 5;

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    my $s = eval {
        rbdx_call($storeid, $scfg, 'status', {},
            ceph => { connect_timeout => $STATUS_TIMEOUT, timeout => $STATUS_TIMEOUT },
            timeout => 3 * $STATUS_TIMEOUT);
    };
    if (my $err = $@) {
        warn "rbdx storage '$storeid' is not available: $err";
        return (0, 0, 0, 0);
    }
    return ($s->{total}, $s->{avail}, $s->{used}, $s->{active});
}

sub activate_storage { return 1; }
sub deactivate_storage { return 1; }
# krbd: a block device for containers (always) and for VMs of krbd storages.
# A Windows guest's volume is mapped with rxbounce; one mapped without it is
# mapped again when PVE says deactivating it is safe.
sub map_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $hints) = @_;
    my @options;
    push @options, 'rxbounce' if $hints && $hints->{'guest-is-windows'};
    my $may_remap = $hints && $hints->{'plugin-may-deactivate-volume'} ? JSON::PP::true : JSON::PP::false;
    return rbdx_call($storeid, $scfg, 'map_volume',
        { volname => $volname, snap => $snapname, options => \@options, may_remap => $may_remap });
}

# Whether the kernel has any rbd device (RBDX_KRBD_ROOT: the host's root
# mounted elsewhere); without one there is nothing to unmap.
sub krbd_has_devices {
    my $root = $ENV{RBDX_KRBD_ROOT} // '';
    my @devices = glob("$root/sys/bus/rbd/devices/*");
    return scalar @devices;
}

sub unmap_volume {
    my ($class, $storeid, $scfg, $volname, $snapname) = @_;
    $class->parse_volname($volname);
    return 1 if !krbd_has_devices();
    rbdx_call($storeid, $scfg, 'unmap_volume', { volname => $volname, snap => $snapname });
    return 1;
}

sub activate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache, $hints) = @_;
    $class->map_volume($storeid, $scfg, $volname, $snapname, $hints) if $scfg->{krbd};
    return 1;
}

sub deactivate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    $class->unmap_volume($storeid, $scfg, $volname, $snapname);
    return 1;
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    my $i = rbdx_call($storeid, $scfg, 'volume_size_info', { volname => $volname });
    return wantarray ? ($i->{size}, 'raw', $i->{used}, $i->{parent}) : $i->{size};
}

sub volume_resize {
    my ($class, $scfg, $storeid, $volname, $size, $running, $snapname) = @_;
    die "resizing a snapshot is not supported for $class\n" if $snapname;
    # QEMU resizes a running librbd disk itself.
    return 1 if $running && !$scfg->{krbd};
    rbdx_call($storeid, $scfg, 'volume_resize', { volname => $volname, size => $size + 0 });    # bytes
    return undef;
}

sub volume_snapshot {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    rbdx_call($storeid, $scfg, 'volume_snapshot', { volname => $volname, snap => $snap });
    return undef;
}

sub volume_snapshot_rollback {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    rbdx_call($storeid, $scfg, 'volume_snapshot_rollback', { volname => $volname, snap => $snap });
    return undef;
}

sub volume_snapshot_delete {
    my ($class, $scfg, $storeid, $volname, $snap, $running) = @_;
    rbdx_call($storeid, $scfg, 'volume_snapshot_delete', { volname => $volname, snap => $snap });
    return undef;
}

# { name => { id, timestamp, virtual-size } }; {} for a volume that is gone.
sub volume_snapshot_info {
    my ($class, $scfg, $storeid, $volname) = @_;
    return rbdx_call($storeid, $scfg, 'volume_snapshot_info', { volname => $volname });
}

sub volume_snapshot_needs_fsfreeze { return 1; }

# As the built-in rbd type, qemu takes the snapshots of a running librbd disk
# (on its image, which rbdx's bookkeeping adopts) — while every snapshot is on
# that image. Once a rollback kept older snapshots on another image of the disk,
# qemu could not delete them there: rbdx does (and krbd disks always).
sub volume_qemu_snapshot_method {
    my ($class, $storeid, $scfg, $volname) = @_;
    return 'storage' if $scfg->{krbd};
    my $m = eval { rbdx_call($storeid, $scfg, 'qemu_snapshot_method', { volname => $volname }) };
    return defined $m && $m eq 'qemu' ? 'qemu' : 'storage';
}

sub rename_volume {
    my ($class, $scfg, $storeid, $source_volname, $target_vmid, $target_volname) = @_;
    my $new = rbdx_call($storeid, $scfg, 'rename_volume',
        { volname => $source_volname, target_vmid => $target_vmid + 0, target_volname => $target_volname });
    return "$storeid:$new";
}

sub volume_has_feature {
    my ($class, $scfg, $feature, $storeid, $volname, $snapname, $running, $opts) = @_;
    my $features = {
        snapshot => { current => 1, snap => 1 },
        clone => { base => 1, snap => 1 },
        template => { current => 1 },
        copy => { base => 1, current => 1, snap => 1 },
        sparseinit => { base => 1, current => 1 },
        rename => { current => 1 },
    };
    my ($vtype, $name, $vmid, $basename, $basevmid, $isBase) = $class->parse_volname($volname);
    my $key = $snapname ? 'snap' : $isBase ? 'base' : 'current';
    return $features->{$feature}->{$key} ? 1 : undef;
}

sub volume_export_formats {
    my ($class, $scfg, $storeid, $volname, $snapshot, $base_snapshot, $with_snapshots) = @_;
    return () if $with_snapshots || defined $base_snapshot;
    return ('raw+size');
}

sub volume_import_formats { my $class = shift; return $class->volume_export_formats(@_); }

sub volume_export {
    my ($class, $scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot, $with_snapshots) = @_;
    $class->parse_volname($volname);
    die "rbdx exports only raw+size\n" if $format ne 'raw+size' || $with_snapshots || defined $base_snapshot;
    my $err = '';
    run_helper(
        input => request($storeid, $scfg, 'volume_export', { volname => $volname, snap => $snapshot }) . "\n",
        output => '>&' . fileno($fh),
        errfunc => sub { $err .= shift },
        noerr => 1,
    );
    die "rbdx volume_export: $err\n" if $err;
    return;
}

sub volume_import {
    my ($class, $scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot, $with_snapshots, $allow_rename) = @_;
    $class->parse_volname($volname);
    die "rbdx imports only raw+size\n" if $format ne 'raw+size' || $with_snapshots || defined $base_snapshot;
    my $out = '';
    # The stream is stdin: the request travels in the environment.
    local $ENV{RBDX_PVE_REQUEST} =
        request($storeid, $scfg, 'volume_import', { volname => $volname, allow_rename => $allow_rename ? JSON::PP::true : JSON::PP::false });
    run_helper(
        input => '<&' . fileno($fh),
        outfunc => sub { $out .= shift },
        noerr => 1,
    );
    my $resp = eval { decode_json($out) } // { ok => 0, error => 'no answer from the rbdx helper' };
    die "$resp->{error}\n" if !$resp->{ok};
    return "$storeid:$resp->{result}";
}

# --- storage.cfg hooks: the keyring and configuration files -------------------

# Writes a file atomically with `mode`: created under a temporary name with that
# mode from the start (a secret is never readable by others, not for a moment),
# then renamed over.
sub write_private {
    my ($file, $content, $mode) = @_;
    my $tmp = "$file.tmp.$$";
    unlink $tmp;
    sysopen(my $fh, $tmp, O_WRONLY | O_CREAT | O_EXCL, $mode) or die "unable to write $tmp: $!\n";
    print $fh $content;
    close($fh) or die "unable to write $tmp: $!\n";
    rename($tmp, $file) or die "unable to write $file: $!\n";
}

sub make_priv_dir {
    mkdir "$PVE_ETC/priv";
    mkdir priv_dir();
}

# As pve-storage's ceph_create_keyfile: the given keyring (0400), else, on a
# hyper-converged node, a copy of the admin keyring; refused if the file exists
# and no keyring is given.
sub create_keyfile {
    my ($storeid, $secret) = @_;
    my $admin = "$PVE_ETC/priv/ceph.client.admin.keyring";
    my $file = keyring_file($storeid);
    die "ceph authx keyring file for storage '$storeid' already exists!\n" if -e $file && !defined $secret;
    if (!defined $secret && !-e $admin) {
        warn "$admin not found, authentication is disabled.\n";
        return;
    }
    eval {
        make_priv_dir();
        if (defined $secret) {
            chomp $secret;
            write_private($file, "$secret\n", 0400);
        } else {
            open(my $in, '<', $admin) or die "unable to read $admin: $!\n";
            my $content = do { local $/; <$in> };
            close($in);
            write_private($file, $content, 0400);
        }
    };
    if (my $err = $@) {
        unlink $file;
        die "failed to copy ceph authx keyring for storage '$storeid': $err\n";
    }
}

# As pve-storage's ceph_create_configuration: `[global] keyring = …` (0600) for a
# storage with monhost, once there is a keyring; an existing file is kept.
sub create_configuration {
    my ($storeid) = @_;
    my $keyring = keyring_file($storeid);
    return if !-e $keyring;
    my $conf = conf_file($storeid);
    if (-e $conf) {
        warn "file $conf already exists, check manually and ensure 'keyring' option is set to '$keyring'!\n";
        return;
    }
    make_priv_dir();
    write_private($conf, "[global]\n\tkeyring = $keyring\n\n", 0600);
}

sub on_add_hook {
    my ($class, $storeid, $scfg, %sensitive) = @_;
    create_keyfile($storeid, $sensitive{keyring});
    create_configuration($storeid) if $scfg->{monhost};
    return;
}

sub on_update_hook {
    my ($class, $storeid, $scfg, %sensitive) = @_;
    return if !exists $sensitive{keyring};
    if (defined $sensitive{keyring}) {
        create_keyfile($storeid, $sensitive{keyring});
    } elsif (-f keyring_file($storeid)) {
        unlink keyring_file($storeid) or warn "removing keyring of storage failed: $!\n";
    }
    return;
}

sub on_delete_hook {
    my ($class, $storeid, $scfg) = @_;
    for my $f (keyring_file($storeid), conf_file($storeid)) {
        unlink $f or warn "removing $f failed: $!\n" if -f $f;
    }
    return;
}

1;
