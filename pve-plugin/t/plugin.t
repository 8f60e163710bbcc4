#!/usr/bin/perl
# The Proxmox VE plugin, loaded against stand-ins for the PVE base classes
# (t/lib), driving every method through the real rbdx helper against the real
# test cluster (tests/cluster/rbdx-test-cluster), on a replicated and on an EC
# storage. Run by tests/run: RBDX_BIN and the RBDX_TEST_* variables must be set.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

use PVE::Storage;
use PVE::Storage::Plugin;
use PVE::Storage::Custom::RBDXPlugin;

my $P = 'PVE::Storage::Custom::RBDXPlugin';

for my $v (qw(RBDX_BIN RBDX_TEST_CONF RBDX_TEST_ID RBDX_TEST_KEYRING RBDX_TEST_POOL RBDX_TEST_EC_POOL)) {
    die "$v is not set: run these tests with tests/run\n" if !$ENV{$v};
}

# --- registration rules --------------------------------------------------------

ok($P->isa('PVE::Storage::Plugin'), 'a PVE::Storage::Plugin');
is($P->type, 'rbdx', 'a storage type of its own');
ok((grep { $_ eq 'rbdx' } @PVE::Storage::Plugin::SHARED_STORAGE), 'registered as shared storage');
is_deeply($P->plugindata->{'sensitive-properties'}, { keyring => 1 }, 'keyring is sensitive');

my %existing = map { $_ => 1 } @PVE::Storage::Plugin::EXISTING_PROPERTIES;
for my $prop (keys %{ $P->properties }) {
    ok(!$existing{$prop}, "property $prop is not redeclared");
    like($prop, qr/^rbdx-/, "new property $prop is prefixed");
}
for my $opt (keys %{ $P->options }) {
    ok($existing{$opt} || $P->properties->{$opt}, "option $opt is a known property");
}
for my $o (qw(pool data-pool namespace monhost username krbd keyring content nodes disable)) {
    ok($P->options->{$o}, "reuses $o");
}

# api() stays inside [APIVER - APIAGE, APIVER] of the running PVE.
for my $case ([9, 0], [10, 1], [11, 2], [12, 3], [13, 4], [14, 5], [15, 6], [16, 7], [20, 8]) {
    local $PVE::Storage::APIVER = $case->[0];
    local $PVE::Storage::APIAGE = $case->[1];
    my $api = $P->api;
    ok($api <= $case->[0] && $api >= $case->[0] - $case->[1], "api $api accepted by APIVER $case->[0] AGE $case->[1]");
}
{
    local $PVE::Storage::APIVER = 30;
    local $PVE::Storage::APIAGE = 2;
    is($P->api, 15, 'a far newer PVE is told 15, the version tested, and refuses it (28 or later accepted)');
}

is_deeply([$P->parse_volname('vm-100-disk-0')], ['images', 'vm-100-disk-0', 100, undef, undef, undef, 'raw']);
is_deeply([$P->parse_volname('base-9-disk-1/vm-100-disk-0')], ['images', 'vm-100-disk-0', 100, 'base-9-disk-1', 9, undef, 'raw']);
eval { $P->parse_volname('../etc') };
like($@, qr/unable to parse/, 'bad volume names are refused');

# --- a PVE config tree with the test cluster's conf and the client's keyring ---

my $etc = tempdir(CLEANUP => 1);
$PVE::Storage::Custom::RBDXPlugin::PVE_ETC = $etc;
symlink($ENV{RBDX_TEST_CONF}, "$etc/ceph.conf") or die "symlink: $!";
my $keyring = do { local (@ARGV, $/) = ($ENV{RBDX_TEST_KEYRING}); <> };

my $base_vmid = 700000 + ($$ % 10000) * 20;
my $next = 0;
sub vmid { return $base_vmid + $next++; }

sub helper {
    my ($sid, $scfg, $method, $params) = @_;
    return PVE::Storage::Custom::RBDXPlugin::rbdx_call($sid, $scfg, $method, $params);
}

sub data_pool_of {
    my ($sid, $scfg, $volname) = @_;
    return helper($sid, $scfg, 'volume_size_info', { volname => $volname })->{data_pool};
}

sub lifecycle {
    my ($sid, $scfg, $want_dp) = @_;
    my $label = $want_dp ? 'EC' : 'replicated';
    $P->on_add_hook($sid, $scfg, keyring => $keyring);
    ok(-f "$etc/priv/ceph/$sid.keyring", "$label: on_add_hook stored the keyring under priv/ceph");
    is((stat("$etc/priv/ceph/$sid.keyring"))[2] & 07777, 0400, "$label: the keyring is readable by root only");
    my $dp = sub { my $v = shift; my $d = data_pool_of($sid, $scfg, $v); is($d, $want_dp, "$label: $v data pool " . ($d // 'none')) };

    my ($total, $avail, $used, $active) = $P->status($sid, $scfg, {});
    ok($active && $total > 0 && $avail > 0 && $total >= $avail, "$label: status $total/$avail/$used");

    # alloc (KiB) -> snapshot -> resize (bytes) -> rollback -> delete snapshots
    my $vm = vmid();
    my $vol = $P->alloc_image($sid, $scfg, $vm, 'raw', undef, 4096);
    is($vol, "vm-$vm-disk-0", "$label: alloc picks the first free name");
    is(scalar $P->volume_size_info($scfg, $sid, $vol), 4 << 20, "$label: size in KiB");
    $dp->($vol);
    $P->volume_snapshot($scfg, $sid, $vol, 'before');
    my $info = $P->volume_snapshot_info($scfg, $sid, $vol);
    ok($info->{before} && $info->{before}{id} && $info->{before}{timestamp}, "$label: volume_snapshot_info");
    is($info->{before}{'virtual-size'}, 4 << 20, "$label: snapshot virtual size");
    $P->volume_resize($scfg, $sid, $vol, 8 << 20, 0);
    is(scalar $P->volume_size_info($scfg, $sid, $vol), 8 << 20, "$label: resize in bytes");
    $P->volume_snapshot_rollback($scfg, $sid, $vol, 'before');
    is(scalar $P->volume_size_info($scfg, $sid, $vol), 4 << 20, "$label: rollback restored the snapshot");
    $dp->($vol);
    $P->volume_snapshot($scfg, $sid, $vol, 'after');
    $P->volume_snapshot_delete($scfg, $sid, $vol, 'before', 0);
    is_deeply([sort keys %{ $P->volume_snapshot_info($scfg, $sid, $vol) }], ['after'], "$label: the rolled-back-to snapshot deletes");
    $P->volume_snapshot_delete($scfg, $sid, $vol, 'after', 0);

    # template -> linked clone; the base is protected while the clone lives
    my $base = $P->create_base($sid, $scfg, $vol);
    is($base, "base-$vm-disk-0", "$label: create_base");
    my $vm2 = vmid();
    my $linked = $P->clone_image($scfg, $sid, $base, $vm2);
    is($linked, "$base/vm-$vm2-disk-0", "$label: linked clone volname records the base");
    $dp->($linked);
    my ($img) = @{ $P->list_images($sid, $scfg, $vm2) };
    is($img->{volid}, "$sid:$linked", "$label: list_images shows the linked clone");
    is($img->{parent}, "$base\@__base__", "$label: with its parent");
    eval { $P->free_image($sid, $scfg, $base, 1) };
    like($@, qr/still in use by linked clones/, "$label: a base with linked clones is not freed");

    # a clone of a snapshot of an ordinary disk, independent of its source
    my $vm3 = vmid();
    my $src = $P->alloc_image($sid, $scfg, $vm3, 'raw', undef, 2048);
    $P->volume_snapshot($scfg, $sid, $src, 's1');
    my $vm4 = vmid();
    my $full = $P->clone_image($scfg, $sid, $src, $vm4, 's1');
    is($full, "vm-$vm4-disk-0", "$label: snapshot clone");
    $dp->($full);
    $P->volume_snapshot_delete($scfg, $sid, $src, 's1', 0);
    $P->free_image($sid, $scfg, $src, 0);
    is(scalar $P->volume_size_info($scfg, $sid, $full), 2 << 20, "$label: the clone outlives its source and its snapshot");

    # export (raw+size) -> import, byte for byte, with the data pool
    is_deeply([$P->volume_export_formats($scfg, $sid, $full, undef, undef, 0)], ['raw+size']);
    my $dir = tempdir(CLEANUP => 1);
    my $data = join('', map { chr(($_ * 7) % 251) } 0 .. (1 << 20) - 1);
    open(my $w, '>', "$dir/in") or die;
    binmode $w;
    print $w pack('Q<', length $data), $data;
    close $w;
    my $vm5 = vmid();
    open(my $r, '<', "$dir/in") or die;
    my $imported = $P->volume_import($scfg, $sid, $r, "vm-$vm5-disk-0", 'raw+size', undef, undef, 0, 0);
    close $r;
    is($imported, "$sid:vm-$vm5-disk-0", "$label: import");
    $dp->("vm-$vm5-disk-0");
    open(my $o, '>', "$dir/out") or die;
    $P->volume_export($scfg, $sid, $o, "vm-$vm5-disk-0", 'raw+size', undef, undef, 0);
    close $o;
    my $back = do { local (@ARGV, $/) = ("$dir/out"); binmode ARGV; <> };
    is(length($back), 8 + length($data), "$label: export size");
    ok(substr($back, 8) eq $data, "$label: export returns the imported bytes");
    my $again = eval { open(my $r2, '<', "$dir/in") or die; $P->volume_import($scfg, $sid, $r2, "vm-$vm5-disk-0", 'raw+size', undef, undef, 0, 1) };
    is($again, "$sid:vm-$vm5-disk-1", "$label: import with allow_rename picks a free name");

    # rename (disk reassign)
    my $vm6 = vmid();
    is($P->rename_volume($scfg, $sid, "vm-$vm5-disk-1", $vm6, undef), "$sid:vm-$vm6-disk-0", "$label: rename_volume");

    # paths
    my ($path) = $P->path($scfg, $vol eq $base ? $base : $base, $sid);
    like($path, qr{^rbd:\Q$scfg->{pool}\E/\Q$base\E:conf=\Q$etc\E/ceph\.conf:id=\Q$scfg->{username}\E:keyring=\Q$etc\E/priv/ceph/\Q$sid\E\.keyring$}, "$label: path");
    my $bd = $P->qemu_blockdev_options($scfg, $sid, $linked, undef, {});
    is_deeply($bd, { driver => 'rbd', pool => $scfg->{pool}, image => "vm-$vm2-disk-0", conf => "$etc/ceph.conf", user => $scfg->{username} }, "$label: blockdev options");
    ok($P->volume_has_feature($scfg, 'clone', $sid, $base, undef), "$label: a base can be cloned");
    ok(!$P->volume_has_feature($scfg, 'template', $sid, $base, undef), "$label: a base is no template again");

    # free everything; nothing of ours is left
    for my $v ($linked, $base, $full, "vm-$vm5-disk-0", "vm-$vm6-disk-0") {
        $P->free_image($sid, $scfg, $v, $v =~ /^base-/ ? 1 : 0);
    }
    my %ours = map { $_ => 1 } ($vm .. $vm6);
    my @left = grep { $ours{ $_->{vmid} } } @{ $P->list_images($sid, $scfg, undef) };
    is(scalar @left, 0, "$label: no volume left") or diag explain \@left;
    $P->on_delete_hook($sid, $scfg);
    ok(!-e "$etc/priv/ceph/$sid.keyring", "$label: on_delete_hook removed the keyring");
}

lifecycle('rbdx-rep', { type => 'rbdx', pool => $ENV{RBDX_TEST_POOL}, username => $ENV{RBDX_TEST_ID} }, undef);
lifecycle('rbdx-ec', { type => 'rbdx', pool => $ENV{RBDX_TEST_POOL}, 'data-pool' => $ENV{RBDX_TEST_EC_POOL}, username => $ENV{RBDX_TEST_ID} }, $ENV{RBDX_TEST_EC_POOL});

# A template made of a linked clone of a template, and so on: a linked clone
# whose clone chain would be longer than rbdx's bound (8) is flattened, and
# named as list_images lists it (no base).
{
    my $sid = 'rbdx-chain';
    my $scfg = { type => 'rbdx', pool => $ENV{RBDX_TEST_POOL}, username => $ENV{RBDX_TEST_ID} };
    $P->on_add_hook($sid, $scfg, keyring => $keyring);
    my $vm = vmid();
    my $vol = $P->alloc_image($sid, $scfg, $vm, 'raw', undef, 1024);
    my @bases;
    for my $depth (1 .. 9) {
        my $base = $P->create_base($sid, $scfg, $vol);
        push @bases, $base;
        $vol = $P->clone_image($scfg, $sid, $base, $vm);
        my ($img) = grep { $_->{volid} eq "$sid:$vol" } @{ $P->list_images($sid, $scfg, $vm) };
        ok($img, "chain: clone $depth is listed as $vol");
        if ($depth < 9) {
            is($vol, "$base/vm-$vm-disk-$depth", "chain: clone $depth is a linked clone");
            is($img && $img->{parent}, "$base\@__base__", "chain: clone $depth reads from its template");
        } else {
            is($vol, "vm-$vm-disk-$depth", 'chain: clone 9 is no linked clone');
            is($img && $img->{parent}, undef, 'chain: clone 9 is flattened');
        }
    }
    $P->free_image($sid, $scfg, $_, /^base-/ ? 1 : 0) for ($vol, reverse @bases);
    is(scalar @{ $P->list_images($sid, $scfg, $vm) }, 0, 'chain: no volume left');
    $P->on_delete_hook($sid, $scfg);
}

# --- krbd: activate maps, path and blockdev name the udev link, deactivate and
# free unmap; the kernel rbd driver and PVE's udev rule are played by
# krbd-double (tests/src/krbd.rs), which reaches the cluster with what the
# helper's map request carries.
{
    my $root = tempdir(CLEANUP => 1);
    local $ENV{RBDX_KRBD_ROOT} = $root;
    my $pid = open(my $kd, '-|', dirname($ENV{RBDX_BIN}) . '/krbd-double', $root) or die "krbd-double: $!";
    is(scalar <$kd>, "ready\n", 'krbd: the kernel stand-in is up');
    my $sid = 'rbdx-krbd';
    my $scfg = { type => 'rbdx', pool => $ENV{RBDX_TEST_POOL}, 'data-pool' => $ENV{RBDX_TEST_EC_POOL}, username => $ENV{RBDX_TEST_ID}, krbd => 1 };
    $P->on_add_hook($sid, $scfg, keyring => $keyring);
    my $vm = vmid();
    my $vol = $P->alloc_image($sid, $scfg, $vm, 'raw', undef, 4096);
    my $devices = sub { my @d = glob("$root/sys/bus/rbd/devices/*"); return scalar @d };
    $P->deactivate_volume($sid, $scfg, $vol, undef, {});
    is($devices->(), 0, 'krbd: deactivating an unmapped volume is a no-op');
    $P->activate_volume($sid, $scfg, $vol, undef, {});
    my ($path) = $P->path($scfg, $vol, $sid);
    like($path, qr{^\Q$root\E/dev/rbd-pve/[0-9a-f-]{36}/\Q$ENV{RBDX_TEST_POOL}\E/\Q$vol\E$}, 'krbd: path is the udev link');
    ok(-e $path, 'krbd: activate_volume mapped the volume');
    is(-s $path, 4 << 20, 'krbd: the device has the volume size');
    is_deeply($P->qemu_blockdev_options($scfg, $sid, $vol, undef, {}), { driver => 'host_device', filename => $path }, 'krbd: blockdev is the device');
    is($P->map_volume($sid, $scfg, $vol, undef, undef), $path, 'krbd: map_volume of a mapped volume returns its device');
    is($devices->(), 1, 'krbd: one device');
    $P->volume_snapshot($scfg, $sid, $vol, 's1');
    my $spath = $P->map_volume($sid, $scfg, $vol, 's1', { 'guest-is-windows' => 1 });
    is($spath, "$path\@s1", 'krbd: a snapshot maps');
    ok(-e $spath, 'krbd: its device exists');
    $P->deactivate_volume($sid, $scfg, $vol, undef, {});
    ok(!-e $path && -e $spath, 'krbd: deactivate_volume unmapped the volume, not its snapshot');
    $P->map_volume($sid, $scfg, $vol, undef, undef);
    $P->free_image($sid, $scfg, $vol, 0);
    is($devices->(), 0, 'krbd: free_image unmapped the volume and its snapshot');
    $P->on_delete_hook($sid, $scfg);
    kill 'TERM', $pid;
    close $kd;
}

# errors come back as one line, and nothing is created
my $scfg = { pool => $ENV{RBDX_TEST_POOL}, username => $ENV{RBDX_TEST_ID} };
$P->on_add_hook('rbdx-err', $scfg, keyring => $keyring);
eval { $P->alloc_image('rbdx-err', $scfg, 5, 'raw', 'vm-6-disk-0', 1024) };
like($@, qr/^illegal name "vm-6-disk-0" - should be 'vm-5-\*'\n\z/, 'a name of another VM is refused in one line');
eval { $P->alloc_image('rbdx-err', $scfg, 5, 'qcow2', undef, 1024) };
like($@, qr/raw images/, 'non-raw formats are refused');
eval { $P->volume_snapshot_rollback($scfg, 'rbdx-err', 'vm-5-disk-77', 'nope') };
like($@, qr/vm-5-disk-77/, 'a missing volume is named');
eval { helper('rbdx-err', $scfg, 'format_everything', {}) };
like($@, qr/malformed request/, 'an unknown method is refused');
$P->on_delete_hook('rbdx-err', $scfg);

done_testing();
