#!/usr/bin/perl
# The golden files in pve-plugin/golden/ are the contract between this module
# and the Rust helper (whose tests parse the same files into its types): for
# every method, the request file must be exactly what the module sends when PVE
# calls it, and the response file must come back to PVE as the method returns
# it (or as a one-line die). A stand-in helper records what it is sent (an
# import's request from RBDX_PVE_REQUEST, and its stream) and answers with the
# golden response (an export's: the raw+size stream).

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

use PVE::Storage::Custom::RBDXPlugin;

my $P = 'PVE::Storage::Custom::RBDXPlugin';
my $golden = dirname(__FILE__) . '/../golden';
my $dir = tempdir(CLEANUP => 1);
my $etc = "$dir/etc";
make_path("$etc/priv/ceph");
# A kernel with one rbd device, so that unmap_volume asks the helper.
make_path("$dir/root/sys/bus/rbd/devices/0");

open(my $h, '>', "$dir/helper") or die;
print $h <<'EOF';
#!/bin/sh
[ "$1" = pve ] || exit 9
if [ -n "${RBDX_PVE_REQUEST+set}" ]; then
    printf '%s' "$RBDX_PVE_REQUEST" > "$GOLDEN_RECORD"
    cat > "$GOLDEN_RECORD.stream"
else
    cat > "$GOLDEN_RECORD"
fi
cat "$GOLDEN_RESPONSE"
EOF
close $h;
chmod 0755, "$dir/helper";
$PVE::Storage::Custom::RBDXPlugin::RBDX = "$dir/helper";
$PVE::Storage::Custom::RBDXPlugin::PVE_ETC = $etc;
$ENV{GOLDEN_RECORD} = "$dir/sent";

sub slurp { my ($f) = @_; open(my $fh, '<:raw', $f) or die "$f: $!"; local $/; return <$fh>; }

# The golden paths name /etc/pve; here that tree is $etc.
sub golden_json { my ($f) = @_; (my $t = slurp($f)) =~ s{/etc/pve}{$etc}g; return decode_json($t); }

# What QEMU is told for an image of storage $c (the request's ceph object).
sub rbd_path {
    my ($c, $image, $snap) = @_;
    my $p = "rbd:$c->{pool}" . (defined $c->{namespace} ? "/$c->{namespace}" : '') . "/$image\@$snap";
    $p .= ":conf=$c->{conf}";
    $p .= ":id=$c->{id}:keyring=$c->{keyring}" if $c->{keyring};
    return $p;
}

# How PVE calls each method (call), and what it gets back for the golden
# result $r (want). Methods PVE reaches through others are called through them.
my %call = (
    status => {
        call => sub { my ($sid, $scfg) = @_; [$P->status($sid, $scfg, {})] },
        want => sub { my ($r) = @_; [@{$r}{qw(total avail used active)}] },
    },
    alloc_image => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->alloc_image($sid, $scfg, $p->{vmid}, 'raw', $p->{name}, $p->{size_kib}) },
    },
    free_image => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->free_image($sid, $scfg, $p->{volname}, undef, 'raw') },
        want => sub { undef },
    },
    list_images => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->list_images($sid, $scfg, $p->{vmid}, undef, {}) },
        want => sub {
            my ($r, $sid) = @_;
            [map { { volid => "$sid:$_->{name}", format => 'raw', size => $_->{size}, vmid => $_->{vmid}, parent => $_->{parent} } } @$r];
        },
    },
    volume_size_info => {
        call => sub { my ($sid, $scfg, $p) = @_; [$P->volume_size_info($scfg, $sid, $p->{volname}, 5)] },
        want => sub { my ($r) = @_; [$r->{size}, 'raw', $r->{used}, $r->{parent}] },
    },
    volume_resize => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->volume_resize($scfg, $sid, $p->{volname}, $p->{size}, 0, undef) },
        want => sub { undef },
    },
    volume_snapshot => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->volume_snapshot($scfg, $sid, $p->{volname}, $p->{snap}) },
        want => sub { undef },
    },
    volume_snapshot_rollback => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->volume_snapshot_rollback($scfg, $sid, $p->{volname}, $p->{snap}) },
        want => sub { undef },
    },
    volume_snapshot_delete => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->volume_snapshot_delete($scfg, $sid, $p->{volname}, $p->{snap}, 0) },
        want => sub { undef },
    },
    volume_snapshot_info => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->volume_snapshot_info($scfg, $sid, $p->{volname}) },
    },
    create_base => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->create_base($sid, $scfg, $p->{volname}) },
    },
    clone_image => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->clone_image($scfg, $sid, $p->{volname}, $p->{vmid}, $p->{snap}) },
    },
    rename_volume => {
        call => sub {
            my ($sid, $scfg, $p) = @_;
            $P->rename_volume($scfg, $sid, $p->{volname}, $p->{target_vmid}, $p->{target_volname});
        },
        want => sub { my ($r, $sid) = @_; "$sid:$r" },
    },
    # No PVE method asks for the fsid (path() with krbd asks for the whole
    # device_path): the module's one way to call the helper.
    fsid => {
        call => sub { my ($sid, $scfg) = @_; PVE::Storage::Custom::RBDXPlugin::rbdx_call($sid, $scfg, 'fsid', {}) },
    },
    device_path => {
        call => sub { my ($sid, $scfg, $p) = @_; [$P->path({ %$scfg, krbd => 1 }, $p->{volname}, $sid, $p->{snap})] },
        want => sub { my ($r, $sid, $p) = @_; [$r, ($P->parse_volname($p->{volname}))[2], 'images'] },
    },
    map_volume => {
        call => sub {
            my ($sid, $scfg, $p) = @_;
            my $windows = grep { $_ eq 'rxbounce' } @{ $p->{options} };
            $P->map_volume($sid, $scfg, $p->{volname}, $p->{snap},
                { 'guest-is-windows' => $windows, 'plugin-may-deactivate-volume' => $p->{may_remap} });
        },
    },
    unmap_volume => {
        call => sub {
            my ($sid, $scfg, $p) = @_;
            local $ENV{RBDX_KRBD_ROOT} = "$dir/root";
            $P->unmap_volume($sid, $scfg, $p->{volname}, $p->{snap});
        },
        want => sub { 1 },
    },
    # QEMU's path to a snapshot names the image that holds it.
    snapshot_image => {
        call => sub { my ($sid, $scfg, $p) = @_; [$P->path($scfg, $p->{volname}, $sid, $p->{snap})] },
        want => sub {
            my ($r, $sid, $p, $c) = @_;
            [rbd_path($c, $r, $p->{snap}), ($P->parse_volname($p->{volname}))[2], 'images'];
        },
    },
    qemu_snapshot_method => {
        call => sub { my ($sid, $scfg, $p) = @_; $P->volume_qemu_snapshot_method($sid, $scfg, $p->{volname}) },
    },
    # An EFI disk's blockdev sets its cache policy; PVE gets the blockdev.
    cache_writeback => {
        call => sub {
            my ($sid, $scfg, $p) = @_;
            $P->qemu_blockdev_options($scfg, $sid, $p->{volname}, 'pc-q35-10.0', { hints => { 'efi-disk' => 1 } });
        },
        want => sub {
            my ($r, $sid, $p, $c) = @_;
            my $b = { driver => 'rbd', pool => $c->{pool}, image => ($P->parse_volname($p->{volname}))[1], conf => $c->{conf} };
            $b->{namespace} = $c->{namespace} if defined $c->{namespace};
            $b->{user} = $c->{id} if $c->{keyring};
            return $b;
        },
    },
    # The stream goes to PVE's file handle as it is.
    volume_export => {
        call => sub {
            my ($sid, $scfg, $p) = @_;
            open(my $fh, '>:raw', "$dir/exported") or die;
            $P->volume_export($scfg, $sid, $fh, $p->{volname}, 'raw+size', $p->{snap}, undef, 0);
            close($fh) or die;
            return slurp("$dir/exported");
        },
        want => sub { slurp("$golden/volume_export.response.raw") },
    },
    # PVE's file handle becomes the helper's stdin.
    volume_import => {
        call => sub {
            my ($sid, $scfg, $p) = @_;
            open(my $fh, '<:raw', "$golden/volume_export.response.raw") or die;
            my $volid = $P->volume_import($scfg, $sid, $fh, $p->{volname}, 'raw+size', undef, undef, 0, $p->{allow_rename});
            is(slurp("$dir/sent.stream"), slurp("$golden/volume_export.response.raw"), 'volume_import: the stream reaches the helper');
            return $volid;
        },
        want => sub { my ($r, $sid) = @_; "$sid:$r" },
    },
);

my @requests = sort glob("$golden/*.request.json");
is(scalar(@requests), scalar(keys %call), scalar(@requests) . ' golden requests, one per method');
for my $file (@requests) {
    my ($method) = $file =~ m{/(\w+)\.request\.json$};
    my $c = $call{$method} or die "no call for $method: add one to %call\n";
    my $want = golden_json($file);
    is($want->{method}, $method, "$method: the file names its method");
    my $sid = $want->{storeid};
    my $ceph = $want->{ceph};
    # The storage.cfg entry and files that make the module send this ceph object.
    my $scfg = { type => 'rbdx', pool => $ceph->{pool} };
    $scfg->{'data-pool'} = $ceph->{data_pool} if defined $ceph->{data_pool};
    $scfg->{username} = $ceph->{id} if defined $ceph->{id};
    $scfg->{namespace} = $ceph->{namespace} if defined $ceph->{namespace};
    $scfg->{monhost} = $ceph->{mon_host} if defined $ceph->{mon_host};
    $scfg->{'rbdx-timeout'} = $ceph->{timeout} if defined $ceph->{timeout} && $method ne 'status';
    my $keyring = PVE::Storage::Custom::RBDXPlugin::keyring_file($sid);
    if (defined $ceph->{keyring}) { open(my $k, '>', $keyring) or die; close $k } else { unlink $keyring }
    my $conf = PVE::Storage::Custom::RBDXPlugin::conf_file($sid);
    if (defined $ceph->{mon_host} && defined $ceph->{conf}) { open(my $k, '>', $conf) or die; close $k } else { unlink $conf }

    my ($response) = grep { -f } map { "$golden/$method.response.$_" } qw(json raw);
    ok($response, "$method: a golden answer") or next;
    local $ENV{GOLDEN_RESPONSE} = $response;
    unlink "$dir/sent", "$dir/sent.stream";
    my $got = eval { $c->{call}->($sid, $scfg, $want->{params}) };
    is($@, '', "$method: the call succeeds");
    is_deeply(eval { decode_json(slurp("$dir/sent")) }, $want, "$method: the module sends the golden request");
    my $result = $response =~ /\.json$/ ? golden_json($response)->{result} : undef;
    my $expect = $c->{want} ? $c->{want}->($result, $sid, $want->{params}, $ceph) : $result;
    is_deeply($got, $expect, "$method: the golden result reaches PVE");
}

# An error answer becomes a die with the helper's line, nothing added.
{
    local $ENV{GOLDEN_RESPONSE} = "$golden/error.response.json";
    my $want = decode_json(slurp("$golden/error.response.json"));
    ok($want->{kind}, 'an error answer has a kind');
    eval { $P->volume_snapshot_rollback({ pool => 'rbd' }, 'ceph', 'vm-100-disk-0', 'x') };
    is($@, "$want->{error}\n", 'an error response dies with its one line');
}

done_testing();
