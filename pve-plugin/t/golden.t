#!/usr/bin/perl
# The golden files in pve-plugin/golden/ are the contract between this module
# and the Rust helper (whose tests parse the same files): each request file must
# be exactly what the module sends for that call, and each response file must
# come back to PVE as the method's result (or as a one-line die). A stand-in
# helper records what it is sent and answers with the golden response.

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

open(my $h, '>', "$dir/helper") or die;
print $h "#!/bin/sh\n[ \"\$1\" = pve ] || exit 9\ncat > \"\$GOLDEN_RECORD\"\ncat \"\$GOLDEN_RESPONSE\"\n";
close $h;
chmod 0755, "$dir/helper";
$PVE::Storage::Custom::RBDXPlugin::RBDX = "$dir/helper";
$PVE::Storage::Custom::RBDXPlugin::PVE_ETC = $etc;
$ENV{GOLDEN_RECORD} = "$dir/sent";

sub slurp { my ($f) = @_; open(my $fh, '<', $f) or die "$f: $!"; local $/; return <$fh>; }

# The golden paths name /etc/pve; here that tree is $etc.
sub golden_json { my ($f) = @_; (my $t = slurp($f)) =~ s{/etc/pve}{$etc}g; return decode_json($t); }

my $ok_null = "$dir/ok-null.json";
open(my $n, '>', $ok_null) or die;
print $n qq({"ok":true,"result":null}\n);
close $n;

# How PVE calls each method whose request has a golden file.
my %call = (
    alloc_image => sub { my ($sid, $scfg, $p) = @_; $P->alloc_image($sid, $scfg, $p->{vmid}, 'raw', $p->{name}, $p->{size_kib}) },
    clone_image => sub { my ($sid, $scfg, $p) = @_; $P->clone_image($scfg, $sid, $p->{volname}, $p->{vmid}, $p->{snap}) },
    status => sub { my ($sid, $scfg) = @_; [$P->status($sid, $scfg, {})] },
    volume_snapshot_rollback => sub { my ($sid, $scfg, $p) = @_; $P->volume_snapshot_rollback($scfg, $sid, $p->{volname}, $p->{snap}) },
    map_volume => sub {
        my ($sid, $scfg, $p) = @_;
        my $windows = grep { $_ eq 'rxbounce' } @{ $p->{options} };
        $P->map_volume($sid, $scfg, $p->{volname}, $p->{snap}, { 'guest-is-windows' => $windows });
    },
);

my @requests = sort glob("$golden/*.request.json");
ok(@requests >= 5, scalar(@requests) . ' golden requests');
for my $file (@requests) {
    my ($method) = $file =~ m{/(\w+)\.request\.json$};
    my $want = golden_json($file);
    is($want->{method}, $method, "$method: the file names its method");
    my $c = $want->{ceph};
    my $scfg = { type => 'rbdx', pool => $c->{pool} };
    $scfg->{'data-pool'} = $c->{data_pool} if defined $c->{data_pool};
    $scfg->{username} = $c->{id} if defined $c->{id};
    $scfg->{namespace} = $c->{namespace} if defined $c->{namespace};
    my $keyring = "$etc/priv/ceph/$want->{storeid}.keyring";
    if (defined $c->{keyring}) { open(my $k, '>', $keyring) or die; close $k } else { unlink $keyring }
    my $response = -f "$golden/$method.response.json" ? "$golden/$method.response.json" : $ok_null;
    local $ENV{GOLDEN_RESPONSE} = $response;
    my $got = eval { $call{$method}->($want->{storeid}, $scfg, $want->{params}) };
    die "no call for $method: add one to %call\n" if !$call{$method};
    is($@, '', "$method: the call succeeds");
    is_deeply(decode_json(slurp("$dir/sent")), $want, "$method: the module sends the golden request");
    my $answer = decode_json(slurp($response));
    is_deeply($got, $method eq 'status'
        ? [@{ $answer->{result} }{qw(total avail used active)}]
        : $answer->{result}, "$method: the golden result reaches PVE")
        if $answer->{result};
}

# An error answer becomes a die with the helper's line, nothing added.
{
    local $ENV{GOLDEN_RESPONSE} = "$golden/error.response.json";
    my $want = decode_json(slurp("$golden/error.response.json"));
    eval { $P->volume_snapshot_rollback({ pool => 'rbd' }, 'ceph', 'vm-100-disk-0', 'x') };
    is($@, "$want->{error}\n", 'an error response dies with its one line');
}

done_testing();
