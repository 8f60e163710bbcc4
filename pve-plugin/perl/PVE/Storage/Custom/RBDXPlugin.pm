package PVE::Storage::Custom::RBDXPlugin;

# rbdx: Ceph RBD storage for Proxmox VE with CoW clones, the EC data pool on
# every image, O(1) snapshot rollback and snapshots that can be deleted while
# clones use them. This module is a thin shim: every method hands its arguments
# to the rbdx helper (`rbdx pve`) as one JSON request on stdin and reads one
# JSON answer on stdout. Keys and keyrings never go on a command line: the
# helper is told the keyring's *path*.
#
# storage.cfg:
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

sub api {
    my $apiver = eval { PVE::Storage::APIVER() };
    return $TESTED_APIVER if !defined($apiver);
    my $apiage = eval { PVE::Storage::APIAGE() } // 0;
    # Speak the running PVE's version when we know it; else the newest we know,
    # if it is still within the accepted window.
    return $apiver if $apiver >= $MIN_APIVER && $apiver <= $TESTED_APIVER;
    return $TESTED_APIVER if $apiver - $apiage <= $TESTED_APIVER;
    return $apiver;    # older than we support: PVE will refuse it with a clear message
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
        'rbdx-timeout' => { optional => 1 },
    };
}

# --- talking to the helper -------------------------------------------------

sub ceph_options {
    my ($storeid, $scfg) = @_;
    my $keyring = "$PVE_ETC/priv/ceph/$storeid.keyring";
    my $conf = $scfg->{monhost} ? "$PVE_ETC/priv/ceph/$storeid.conf" : "$PVE_ETC/ceph.conf";
    my $o = {
        pool => $scfg->{pool} // 'rbd',
        id => $scfg->{username} // 'admin',
        conf => $conf,
    };
    $o->{data_pool} = $scfg->{'data-pool'} if defined $scfg->{'data-pool'};
    $o->{namespace} = $scfg->{namespace} if defined $scfg->{namespace};
    $o->{keyring} = $keyring if -f $keyring;
    $o->{mon_host} = join(',', PVE::Tools::split_list($scfg->{monhost})) if $scfg->{monhost};
    $o->{timeout} = $scfg->{'rbdx-timeout'} + 0 if defined $scfg->{'rbdx-timeout'};
    return $o;
}

sub request {
    my ($storeid, $scfg, $method, $params) = @_;
    return JSON::PP->new->canonical->encode({
        version => 1,
        storeid => "$storeid",
        ceph => ceph_options($storeid, $scfg),
        method => $method,
        params => $params // {},
    });
}

sub helper_timeout {
    my ($scfg) = @_;
    return ($scfg->{'rbdx-timeout'} // 60) * 10;
}

# Runs one helper call; dies with the helper's one-line error. A volume name
# outside the grammar dies here, before the helper is started.
sub rbdx_call {
    my ($storeid, $scfg, $method, $params) = @_;
    for my $k (qw(volname target_volname)) {
        __PACKAGE__->parse_volname($params->{$k}) if defined $params && defined $params->{$k};
    }
    my ($out, $err) = ('', '');
    run_command(
        [$RBDX, 'pve'],
        input => request($storeid, $scfg, $method, $params) . "\n",
        outfunc => sub { $out .= shift },
        errfunc => sub { $err .= shift . "\n" },
        timeout => helper_timeout($scfg),
        noerr => 1,
    );
    my $resp = eval { decode_json($out) };
    if (!$resp) {
        $err =~ s/\s+/ /g;
        die "rbdx $method: no answer from $RBDX" . ($err ? ": $err" : '') . "\n";
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

# QEMU's librbd path (PVE 8): rbd:<pool>[/<ns>]/<image>[@snap]:conf=…[:id=…:keyring=…]
sub path {
    my ($class, $scfg, $volname, $storeid, $snapname) = @_;
    my ($vtype, $name, $vmid) = $class->parse_volname($volname);
    my $o = ceph_options($storeid, $scfg);
    if ($scfg->{krbd}) {
        # /dev/rbd-pve/<fsid>/<pool>[/<ns>]/<image>[@snap], with the image that
        # holds the snapshot (after a rollback, an older image of the disk).
        my $dev = rbdx_call($storeid, $scfg, 'device_path', { volname => $volname, snap => $snapname });
        return ($dev, $vmid, $vtype);
    }
    my $esc = sub { my $s = shift; $s =~ s/([\\:])/\\$1/g; return $s };
    my $path = "rbd:" . $esc->($o->{pool});
    $path .= "/" . $esc->($o->{namespace}) if defined $o->{namespace};
    $path .= "/" . $esc->($name);
    $path .= "\@" . $esc->($snapname) if defined $snapname;
    $path .= ":conf=" . $esc->($o->{conf});
    if ($o->{mon_host}) {
        (my $mon = $o->{mon_host}) =~ s/,/;/g;
        $path .= ":mon_host=" . $esc->($mon);
    }
    if ($o->{keyring}) {
        $path .= ":id=" . $esc->($o->{id}) . ":keyring=" . $esc->($o->{keyring});
    }
    return ($path, $vmid, $vtype);
}

# PVE 9: the rbd block driver, or the krbd device.
sub qemu_blockdev_options {
    my ($class, $scfg, $storeid, $volname, $machine_version, $options) = @_;
    my (undef, $name) = $class->parse_volname($volname);
    my $snap = $options->{'snapshot-name'};
    if ($scfg->{krbd}) {
        my ($dev) = $class->path($scfg, $volname, $storeid, $snap);
        return { driver => 'host_device', filename => $dev };
    }
    my $o = ceph_options($storeid, $scfg);
    my $b = { driver => 'rbd', pool => "$o->{pool}", image => "$name", conf => "$o->{conf}" };
    $b->{namespace} = "$o->{namespace}" if defined $o->{namespace};
    $b->{snapshot} = "$snap" if defined $snap;
    $b->{user} = "$o->{id}" if $o->{keyring};
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

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    my $s = rbdx_call($storeid, $scfg, 'status', {});
    return ($s->{total}, $s->{avail}, $s->{used}, $s->{active});
}

sub activate_storage { return 1; }
sub deactivate_storage { return 1; }
# krbd: a block device for containers (always) and for VMs of krbd storages.
sub map_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $hints) = @_;
    my @options;
    push @options, 'rxbounce' if $hints && $hints->{'guest-is-windows'};
    return rbdx_call($storeid, $scfg, 'map_volume', { volname => $volname, snap => $snapname, options => \@options });
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
    die "rbdx cannot resize a snapshot\n" if defined $snapname;
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

sub volume_snapshot_info {
    my ($class, $scfg, $storeid, $volname) = @_;
    return rbdx_call($storeid, $scfg, 'volume_snapshot_info', { volname => $volname });
}

sub volume_snapshot_needs_fsfreeze { return 1; }

sub volume_qemu_snapshot_method {
    my ($class, $storeid, $scfg, $volname) = @_;
    # Snapshots go through rbdx so that they join its scheme (O(1) rollback).
    return 'storage';
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
    run_command(
        [$RBDX, 'pve'],
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
    run_command(
        [$RBDX, 'pve'],
        input => '<&' . fileno($fh),
        outfunc => sub { $out .= shift },
        noerr => 1,
    );
    my $resp = eval { decode_json($out) } // { ok => 0, error => 'no answer from the rbdx helper' };
    die "$resp->{error}\n" if !$resp->{ok};
    return "$storeid:$resp->{result}";
}

# --- storage.cfg hooks: the keyring lives in /etc/pve/priv/ceph/<storeid>.keyring

# Writes a secret file readable by root only: created 0600 under a temporary
# name (never readable by others, not even for a moment), then renamed over.
sub write_private {
    my ($file, $content) = @_;
    my $tmp = "$file.tmp.$$";
    unlink $tmp;
    sysopen(my $fh, $tmp, O_WRONLY | O_CREAT | O_EXCL, 0600) or die "unable to write $tmp: $!\n";
    print $fh $content;
    close($fh) or die "unable to write $tmp: $!\n";
    rename($tmp, $file) or die "unable to write $file: $!\n";
}

sub write_keyring {
    my ($storeid, $keyring) = @_;
    my $dir = "$PVE_ETC/priv/ceph";
    mkdir "$PVE_ETC/priv";
    mkdir $dir;
    write_private("$dir/$storeid.keyring", $keyring);
}

sub on_add_hook {
    my ($class, $storeid, $scfg, %sensitive) = @_;
    write_keyring($storeid, $sensitive{keyring}) if defined $sensitive{keyring};
    return;
}

sub on_update_hook {
    my ($class, $storeid, $scfg, %sensitive) = @_;
    return if !exists $sensitive{keyring};
    if (defined $sensitive{keyring}) {
        write_keyring($storeid, $sensitive{keyring});
    } else {
        unlink "$PVE_ETC/priv/ceph/$storeid.keyring";
    }
    return;
}

sub on_delete_hook {
    my ($class, $storeid, $scfg) = @_;
    unlink "$PVE_ETC/priv/ceph/$storeid.keyring";
    unlink "$PVE_ETC/priv/ceph/$storeid.conf";
    return;
}

1;
