#!/usr/bin/perl
# Volume names: the plugin's parse_volname follows the grammar the Rust helper
# follows (golden/volnames.json, read by both test suites), and every method that
# takes a volume name refuses one for another VM's disk before the helper runs.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

use PVE::Storage::Custom::RBDXPlugin;

my $P = 'PVE::Storage::Custom::RBDXPlugin';
my $golden = dirname(__FILE__) . '/../golden/volnames.json';
my $cases = do { open(my $fh, '<', $golden) or die "$golden: $!"; local $/; decode_json(<$fh>) };
ok(@$cases >= 20, 'the golden grammar cases');

for my $c (@$cases) {
    my $name = $c->{volname};
    my @r = eval { $P->parse_volname($name) };
    if ($c->{ok}) {
        is($@, '', "parses: $name");
        is($r[1], $c->{image}, "image of $name");
        is($r[2], $c->{vmid}, "owner of $name");
        is($r[3], $c->{base}, "base of $name");
        is($r[4], $c->{basevmid}, "base owner of $name");
        is($r[5] ? 1 : 0, $c->{image} =~ /^base-/ ? 1 : 0, "isBase of $name");
    } else {
        like($@, qr/unable to parse/, "refused: " . ($name =~ s/\n/\\n/gr));
    }
}

# Every method that takes a volume name dies on another VM's disk, and the
# helper (a stand-in that records being run) is never started.
my $dir = tempdir(CLEANUP => 1);
open(my $h, '>', "$dir/helper") or die;
print $h "#!/bin/sh\ntouch \"$dir/ran\"\necho '{\"ok\":true,\"result\":null}'\n";
close $h;
chmod 0755, "$dir/helper";
$PVE::Storage::Custom::RBDXPlugin::RBDX = "$dir/helper";
$PVE::Storage::Custom::RBDXPlugin::PVE_ETC = $dir;
my ($sid, $scfg) = ('s', { pool => 'rbd' });
my %methods = (
    path => sub { $P->path($scfg, $_[0], $sid) },
    qemu_blockdev_options => sub { $P->qemu_blockdev_options($scfg, $sid, $_[0], '9.0', {}) },
    free_image => sub { $P->free_image($sid, $scfg, $_[0]) },
    clone_image => sub { $P->clone_image($scfg, $sid, $_[0], 300, undef) },
    create_base => sub { $P->create_base($sid, $scfg, $_[0]) },
    map_volume => sub { $P->map_volume($sid, { %$scfg, krbd => 1 }, $_[0]) },
    unmap_volume => sub { local $ENV{RBDX_KRBD_ROOT} = $dir; mkdir "$dir/sys"; $P->unmap_volume($sid, $scfg, $_[0]) },
    activate_volume => sub { $P->activate_volume($sid, { %$scfg, krbd => 1 }, $_[0]) },
    volume_size_info => sub { $P->volume_size_info($scfg, $sid, $_[0]) },
    volume_resize => sub { $P->volume_resize($scfg, $sid, $_[0], 1 << 30, 0) },
    volume_snapshot => sub { $P->volume_snapshot($scfg, $sid, $_[0], 's1') },
    volume_snapshot_rollback => sub { $P->volume_snapshot_rollback($scfg, $sid, $_[0], 's1') },
    volume_snapshot_delete => sub { $P->volume_snapshot_delete($scfg, $sid, $_[0], 's1') },
    volume_snapshot_info => sub { $P->volume_snapshot_info($scfg, $sid, $_[0]) },
    rename_volume => sub { $P->rename_volume($scfg, $sid, $_[0], 300, undef) },
    rename_volume_target => sub { $P->rename_volume($scfg, $sid, 'vm-300-disk-0', 100, $_[0]) },
    volume_has_feature => sub { $P->volume_has_feature($scfg, 'snapshot', $sid, $_[0]) },
    volume_export => sub { $P->volume_export($scfg, $sid, \*STDOUT, $_[0], 'raw+size') },
    volume_import => sub { $P->volume_import($scfg, $sid, \*STDIN, $_[0], 'raw+size') },
);
for my $m (sort keys %methods) {
    for my $bad ('vm-100-x/vm-200-disk-0', 'vm-100-disk-9/vm-200-disk-0', 'vm-100-a/b/vm-200-disk-0') {
        unlink "$dir/ran";
        eval { $methods{$m}->($bad) };
        like($@, qr/unable to parse rbdx volume name/, "$m refuses $bad");
        ok(!-e "$dir/ran", "$m did not run the helper for $bad");
    }
}

done_testing();
