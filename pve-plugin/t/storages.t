#!/usr/bin/perl
# The whole storage lifecycle of an external-cluster rbdx storage (monhost and a
# keyring, as `pvesm add rbdx … --monhost … --keyring …` makes it) and of a
# hyper-converged one (the node's ceph.conf and admin keyring), through the
# plugin and the real helper against the test cluster: add, alloc, snapshots,
# rollback, paths and blockdev options of snapshots taken before the rollback,
# export/import, clones from those snapshots (linked and full), template, resize,
# list, free, remove. Then the API details: api(), volume_resize with a
# snapshot, volume_snapshot_info of a missing volume, the qemu snapshot method,
# bwlimit, the EFI-disk writeback hint, and a status that answers fast when the
# cluster does not.

use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;
use Time::HiRes qw(time);

use PVE::Storage;
use PVE::Storage::Custom::RBDXPlugin;

my $P = 'PVE::Storage::Custom::RBDXPlugin';

for my $v (qw(RBDX_BIN RBDX_TEST_CONF RBDX_TEST_ID RBDX_TEST_KEYRING RBDX_TEST_POOL RBDX_TEST_EC_POOL)) {
    die "$v is not set: run these tests with tests/run\n" if !$ENV{$v};
}

sub slurp { my ($f) = @_; open(my $fh, '<', $f) or die "$f: $!"; local $/; my $c = <$fh>; return $c; }

my $etc = tempdir(CLEANUP => 1);
$PVE::Storage::Custom::RBDXPlugin::PVE_ETC = $etc;
symlink($ENV{RBDX_TEST_CONF}, "$etc/ceph.conf") or die "symlink: $!";
my $keyring = slurp($ENV{RBDX_TEST_KEYRING});

# The monitor as storage.cfg's monhost names it: host:port, no msgr prefix.
my ($mon) = slurp($ENV{RBDX_TEST_CONF}) =~ m/^\s*mon[ _]host\s*=\s*(\S+)/m;
$mon =~ s/^\[//;
$mon =~ s/[,\]].*//;
$mon =~ s/^v[12]://;
$mon =~ s{/\d+$}{};
my ($mon_host, $mon_port) = $mon =~ m/^(.+):(\d+)$/ or die "cannot read the monitor address from $ENV{RBDX_TEST_CONF}\n";

my $base_vmid = 800000 + ($$ % 10000) * 20;
my $next = 0;
sub vmid { return $base_vmid + $next++; }

sub mode { my ($f) = @_; return (stat($f))[2] & 07777; }

# `rbdx image info` of pool/image@snap as JSON, with the test client.
sub image_info {
    my ($spec) = @_;
    my $out = qx{$ENV{RBDX_BIN} image info --json --conf $ENV{RBDX_TEST_CONF} --id $ENV{RBDX_TEST_ID} --keyring $ENV{RBDX_TEST_KEYRING} '$spec' 2>&1};
    return $? == 0 ? decode_json($out) : undef;
}

# The pool/image@snap a librbd path names.
sub spec_of_path {
    my ($path) = @_;
    my ($spec) = $path =~ m/^rbd:((?:[^:\\]|\\.)+)/ or return;
    $spec =~ s/\\(.)/$1/g;
    return $spec;
}

sub lifecycle {
    my ($sid, $scfg, $label) = @_;
    my $ext = defined $scfg->{monhost};
    my ($keyfile, $conffile) = ("$etc/priv/ceph/$sid.keyring", "$etc/priv/ceph/$sid.conf");

    # add: the files the built-in type writes, with the same contents and modes.
    if ($ext) {
        $P->on_add_hook($sid, $scfg, keyring => $keyring);
        is(slurp($conffile), "[global]\n\tkeyring = $keyfile\n\n", "$label: on_add_hook wrote $sid.conf naming the keyring");
        is(mode($conffile), 0600, "$label: $sid.conf is root's");
    } else {
        $P->on_add_hook($sid, $scfg);
        ok(!-e $conffile, "$label: no $sid.conf without monhost");
    }
    (my $want = $keyring) =~ s/\n*\z/\n/;
    is(slurp($keyfile), $want, "$label: $sid.keyring holds the keyring");
    is(mode($keyfile), 0400, "$label: $sid.keyring is read-only for root");
    eval { $P->on_add_hook($sid, $scfg) };
    like($@, qr/already exists/, "$label: adding again without a keyring keeps the existing one");

    my ($total, $avail, $used, $active) = $P->status($sid, $scfg, {});
    ok($active && $total > 0, "$label: status reaches the cluster");

    # A small image holding its snapshot is rolled back in place (the default
    # bound): the disk stays one image, so qemu still takes the snapshots.
    my $vm = vmid();
    my $small = $P->alloc_image($sid, $scfg, $vm, 'raw', undef, 4096);
    $P->volume_snapshot($scfg, $sid, $small, 's1');
    $P->volume_resize($scfg, $sid, $small, 8 << 20, 0, '');
    $P->volume_snapshot_rollback($scfg, $sid, $small, 's1');
    is(scalar $P->volume_size_info($scfg, $sid, $small), 4 << 20, "$label: rolled back to s1 in place");
    is($P->volume_qemu_snapshot_method($sid, $scfg, $small), 'qemu', "$label: after a rollback in place, qemu still takes the snapshots");
    my $info = image_info("$scfg->{pool}/$small");
    is_deeply([$info->{parent}, [map { $_->{name} } @{ $info->{snapshots} }]], [undef, ['s1']], "$label: the same image, not a clone, holds s1");
    $P->free_image($sid, $scfg, $small, 0);

    # The rest reverts by the clone swap (rbdx-rollback-max-mb 0): alloc, s1 at
    # 4 MiB, grow to 8 MiB, s2, roll back to s1.
    local $scfg->{'rbdx-rollback-max-mb'} = 0;
    my $vol = $P->alloc_image($sid, $scfg, $vm, 'raw', undef, 4096);
    is($P->volume_qemu_snapshot_method($sid, $scfg, $vol), 'qemu', "$label: qemu snapshots a disk whose snapshots are all on its image");
    $P->volume_snapshot($scfg, $sid, $vol, 's1');
    $P->volume_resize($scfg, $sid, $vol, 8 << 20, 0, '');
    eval { $P->volume_resize($scfg, $sid, $vol, 16 << 20, 0, 's1') };
    like($@, qr/resizing a snapshot is not supported/, "$label: a snapshot is not resized");
    $P->volume_snapshot($scfg, $sid, $vol, 's2');
    $P->volume_snapshot_rollback($scfg, $sid, $vol, 's1');
    is(scalar $P->volume_size_info($scfg, $sid, $vol), 4 << 20, "$label: rolled back to s1");
    is($P->volume_qemu_snapshot_method($sid, $scfg, $vol), 'storage', "$label: after a rollback, rbdx takes and deletes the snapshots");
    is_deeply([sort keys %{ $P->volume_snapshot_info($scfg, $sid, $vol) }], ['s1', 's2'], "$label: both snapshots listed");

    # paths and blockdev options of the snapshots taken before the rollback
    for my $case (['s1', 4 << 20], ['s2', 8 << 20]) {
        my ($snap, $size) = @$case;
        my ($path) = $P->path($scfg, $vol, $sid, $snap);
        my $spec = spec_of_path($path);
        like($spec, qr/\@\Q$snap\E$/, "$label: path($snap) names the snapshot");
        my $info = image_info($spec);
        ok($info, "$label: path($snap) opens ($spec)") and is($info->{size}, $size, "$label: path($snap) has the snapshot's size");
        if ($ext) {
            like($path, qr/:mon_host=\Q$mon_host\E\\:\Q$mon_port\E:auth_supported=cephx:id=\Q$scfg->{username}\E:keyring=\Q$keyfile\E$/, "$label: path($snap) names the monitors and the keyring");
            like($path, qr/:conf=\Q$conffile\E:/, "$label: path($snap) reads $sid.conf");
        }
        my $bd = $P->qemu_blockdev_options($scfg, $sid, $vol, undef, { 'snapshot-name' => $snap });
        my ($image) = $spec =~ m{/([^/\@]+)\@};
        is($bd->{image}, $image, "$label: blockdev of $snap names the image holding it");
        is($bd->{snapshot}, $snap, "$label: blockdev names the snapshot $snap");
        if ($ext) {
            is_deeply($bd->{server}, [{ host => $mon_host, port => $mon_port }], "$label: blockdev lists the monitors");
            is_deeply($bd->{'auth-client-required'}, ['cephx'], "$label: blockdev asks for cephx");
            is($bd->{conf}, $conffile, "$label: blockdev reads $sid.conf");
        } else {
            ok(!exists $bd->{server} && $bd->{conf} eq "$etc/ceph.conf", "$label: blockdev reads the node's ceph.conf");
        }
        is($bd->{user}, $scfg->{username}, "$label: blockdev user");
    }

    # export s2 (kept on an older image) and import it: a full clone's data path
    my $dir = tempdir(CLEANUP => 1);
    open(my $o, '>', "$dir/s2") or die;
    $P->volume_export($scfg, $sid, $o, $vol, 'raw+size', 's2', undef, 0);
    close $o;
    is(-s "$dir/s2", 8 + (8 << 20), "$label: export of s2 after the rollback");
    my $vm_full = vmid();
    open(my $r, '<', "$dir/s2") or die;
    my $full = $P->volume_import($scfg, $sid, $r, "vm-$vm_full-disk-0", 'raw+size', undef, undef, 0, 0);
    close $r;
    is($full, "$sid:vm-$vm_full-disk-0", "$label: full clone of s2 by export and import");
    is(scalar $P->volume_size_info($scfg, $sid, "vm-$vm_full-disk-0"), 8 << 20, "$label: the full clone has s2's size");

    # linked clones of s1 and s2
    my $vm_l1 = vmid();
    my $l1 = $P->clone_image($scfg, $sid, $vol, $vm_l1, 's1');
    is(scalar $P->volume_size_info($scfg, $sid, $l1), 4 << 20, "$label: linked clone of s1");
    my $l2 = $P->clone_image($scfg, $sid, $vol, $vm_l1, 's2');
    is(scalar $P->volume_size_info($scfg, $sid, $l2), 8 << 20, "$label: linked clone of s2, taken before the rollback");

    # snapshots delete with their clones alive
    $P->volume_snapshot_delete($scfg, $sid, $vol, 's2', 0);
    $P->volume_snapshot_delete($scfg, $sid, $vol, 's1', 0);
    is_deeply($P->volume_snapshot_info($scfg, $sid, $vol), {}, "$label: snapshots deleted while clones use them");

    # template, linked clone of it, list
    my $base = $P->create_base($sid, $scfg, $vol);
    my $vm_t = vmid();
    my $linked = $P->clone_image($scfg, $sid, $base, $vm_t);
    is($linked, "$base/vm-$vm_t-disk-0", "$label: linked clone of the template");
    my @listed = map { $_->{volid} } @{ $P->list_images($sid, $scfg, undef) };
    for my $v ($base, $linked, $l1, $l2, "vm-$vm_full-disk-0") {
        ok((grep { $_ eq "$sid:$v" } @listed), "$label: list_images shows $v");
    }

    # free everything; a freed volume has no snapshots
    for my $v ($linked, $l1, $l2, "vm-$vm_full-disk-0", $base) {
        $P->free_image($sid, $scfg, $v, $v =~ /^base-/ ? 1 : 0);
    }
    is_deeply($P->volume_snapshot_info($scfg, $sid, $base), {}, "$label: volume_snapshot_info of a volume that is gone is empty");
    my %ours = map { $_ => 1 } ($vm .. $vm_t);
    my @left = grep { $ours{ $_->{vmid} } } @{ $P->list_images($sid, $scfg, undef) };
    is(scalar @left, 0, "$label: nothing left") or diag explain \@left;

    # remove
    $P->on_delete_hook($sid, $scfg);
    ok(!-e $keyfile && !-e $conffile, "$label: on_delete_hook removed the storage's files");
}

my $ec = $ENV{RBDX_TEST_EC_POOL};
lifecycle('rbdx-ext', { type => 'rbdx', pool => $ENV{RBDX_TEST_POOL}, 'data-pool' => $ec, username => $ENV{RBDX_TEST_ID}, monhost => "$mon_host:$mon_port" }, 'external');

# Hyper-converged: the node's ceph.conf and admin keyring, copied to the storage.
mkdir "$etc/priv";
open(my $adm, '>', "$etc/priv/ceph.client.admin.keyring") or die;
print $adm $keyring;
close $adm;
lifecycle('rbdx-hc', { type => 'rbdx', pool => $ENV{RBDX_TEST_POOL}, 'data-pool' => $ec, username => $ENV{RBDX_TEST_ID} }, 'hyper-converged');

# on_update_hook: a new keyring replaces the file, an emptied one removes it.
{
    my $scfg = { type => 'rbdx', pool => $ENV{RBDX_TEST_POOL}, username => $ENV{RBDX_TEST_ID}, monhost => "$mon_host:$mon_port" };
    $P->on_add_hook('rbdx-upd', $scfg, keyring => "old\n");
    $P->on_update_hook('rbdx-upd', $scfg, keyring => $keyring);
    (my $want = $keyring) =~ s/\n*\z/\n/;
    is(slurp("$etc/priv/ceph/rbdx-upd.keyring"), $want, 'on_update_hook replaces the keyring');
    $P->on_update_hook('rbdx-upd', $scfg, keyring => undef);
    ok(!-e "$etc/priv/ceph/rbdx-upd.keyring", 'on_update_hook without a keyring removes it');
    my $o = PVE::Storage::Custom::RBDXPlugin::ceph_options('rbdx-upd', $scfg);
    is($o->{auth_supported}, 'none', 'no keyring: no cephx, as the built-in type');
    my $bd = $P->qemu_blockdev_options($scfg, 'rbdx-upd', 'vm-1-disk-0', undef, {});
    is_deeply($bd->{'auth-client-required'}, ['none'], 'no keyring: blockdev asks for no authentication');
    ok(!exists $bd->{user}, 'no keyring: no user');
    $P->on_delete_hook('rbdx-upd', $scfg);
}

# IPv6 monitors and default ports, as pve-storage's hostlist and blockdev.
{
    my $scfg = { type => 'rbdx', pool => 'rbd', monhost => '10.0.0.1 [fd00::2]:6789; fd00::3' };
    is(PVE::Storage::Custom::RBDXPlugin::hostlist($scfg->{monhost}, ','), '10.0.0.1,[fd00::2]:6789,[fd00::3]', 'hostlist');
    my $bd = $P->qemu_blockdev_options($scfg, 'rbdx-v6', 'vm-1-disk-0', undef, {});
    is_deeply($bd->{server}, [{ host => '10.0.0.1', port => '3300' }, { host => 'fd00::2', port => '6789' }, { host => 'fd00::3', port => '3300' }], 'blockdev servers, port 3300 by default');
    unlink "$etc/priv/ceph/rbdx-v6.conf";
}

# api(): the running PVE's version up to the tested 15; a newer PVE gets 15.
for my $case ([9, 0, 9], [12, 3, 12], [15, 6, 15], [16, 7, 15], [20, 8, 15], [30, 2, 15]) {
    local $PVE::Storage::APIVER = $case->[0];
    local $PVE::Storage::APIAGE = $case->[1];
    is($P->api, $case->[2], "api() with APIVER $case->[0] AGE $case->[1]");
}

ok($P->options->{bwlimit}, 'bwlimit is an option');

# The EFI-disk hint sets writeback caching on the image.
{
    my $sid = 'rbdx-efi';
    my $scfg = { type => 'rbdx', pool => $ENV{RBDX_TEST_POOL}, username => $ENV{RBDX_TEST_ID} };
    $P->on_add_hook($sid, $scfg, keyring => $keyring);
    my $vol = $P->alloc_image($sid, $scfg, vmid(), 'raw', undef, 1024);
    $P->qemu_blockdev_options($scfg, $sid, $vol, undef, { hints => { 'efi-disk' => 1 } });
    my $info = image_info("$ENV{RBDX_TEST_POOL}/$vol");
    is($info->{metadata}{conf_rbd_cache_policy}, 'writeback', 'efi-disk: rbd_cache_policy writeback on the image');
    $P->free_image($sid, $scfg, $vol, 0);
    $P->on_delete_hook($sid, $scfg);
}

# A cluster that does not answer: status says inactive within seconds.
{
    local $PVE::Storage::Custom::RBDXPlugin::STATUS_TIMEOUT = 2;
    my $scfg = { type => 'rbdx', pool => 'rbd', username => 'admin', monhost => '127.0.0.1:9' };
    $P->on_add_hook('rbdx-dead', $scfg, keyring => $keyring);
    my $t = time();
    my @warn;
    local $SIG{__WARN__} = sub { push @warn, @_ };
    my @s = $P->status('rbdx-dead', $scfg, {});
    my $took = time() - $t;
    ok(!$s[3], 'a dead cluster: status inactive');
    ok($took < 10, sprintf('a dead cluster: status answered in %.1f s', $took));
    like(join('', @warn), qr/not available/, 'a dead cluster: one warning');
    $P->on_delete_hook('rbdx-dead', $scfg);
}

done_testing();
