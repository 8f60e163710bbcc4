#!/usr/bin/perl
# Which program the module runs as the helper: `rbdx pve`, or `rbdx-run pve`
# (rbdx-run beside it) with RBDX_AGENT_SOCKET added to its environment when the
# agent's socket is there. RBDX_BIN always wins. Stand-ins for both programs
# report what they were run as; then the real rbdx-run and agent (beside
# RBDX_BIN, when built) answer a request as `rbdx pve` does.

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON::PP;
use POSIX ();
use Socket qw(SOCK_STREAM);
use Test::More;

use PVE::Storage::Custom::RBDXPlugin;

my $P = 'PVE::Storage::Custom::RBDXPlugin';
my $dir = tempdir(CLEANUP => 1);
make_dir("$dir/etc/priv/ceph");
$PVE::Storage::Custom::RBDXPlugin::PVE_ETC = "$dir/etc";
delete $ENV{RBDX_AGENT_SOCKET};

sub make_dir { my ($d) = @_; system('mkdir', '-p', $d) == 0 or die "mkdir $d\n"; }

# --- the defaults, as PVE loads the module (a fresh perl) -----------------------

sub loaded_with {
    my (%env) = @_;
    local %ENV = %ENV;
    delete $ENV{RBDX_BIN};
    @ENV{ keys %env } = values %env;
    my $code = 'use PVE::Storage::Custom::RBDXPlugin; no warnings "once";'
        . ' print join("|", $PVE::Storage::Custom::RBDXPlugin::RBDX, $PVE::Storage::Custom::RBDXPlugin::AGENT_SOCKET // "undef")';
    my $out = `"$^X" @{[ map { "-I$_" } @INC ]} -e '$code'`;
    return $out;
}
is(loaded_with(), '/usr/bin/rbdx|/run/rbdx/pve.sock', 'installed: /usr/bin/rbdx, the agent at /run/rbdx/pve.sock');
is(loaded_with(RBDX_BIN => '/opt/rbdx'), '/opt/rbdx|undef', 'RBDX_BIN: that binary, never the agent');

# --- the choice ---------------------------------------------------------------

# Each stand-in answers with its name, its arguments, RBDX_AGENT_SOCKET and the
# request it read (volume_import: from RBDX_PVE_REQUEST; volume_export: the
# answer is the stream).
for my $name (qw(rbdx rbdx-run)) {
    open(my $h, '>', "$dir/$name") or die;
    print $h <<EOF;
#!/bin/sh
if [ -n "\${RBDX_PVE_REQUEST+set}" ]; then req=\$RBDX_PVE_REQUEST; cat >/dev/null; else req=\$(cat); fi
method=\$(printf '%s' "\$req" | sed -n 's/.*"method":"\\([a-z_]*\\)".*/\\1/p')
said="$name \$* \${RBDX_AGENT_SOCKET-unset}"
if [ "\$method" = volume_export ]; then printf '%s' "\$said"; exit 0; fi
printf '{"ok":true,"result":"%s %s"}\\n' "\$said" "\$method"
EOF
    close $h;
    chmod 0755, "$dir/$name";
}
my $sock = "$dir/pve.sock";
$PVE::Storage::Custom::RBDXPlugin::RBDX = "$dir/rbdx";
$PVE::Storage::Custom::RBDXPlugin::AGENT_SOCKET = $sock;
my $scfg = { type => 'rbdx', pool => 'rbd' };

sub call { return PVE::Storage::Custom::RBDXPlugin::rbdx_call('s', $scfg, 'fsid', {}); }

sub exported {
    open(my $fh, '+>', "$dir/export") or die;
    $P->volume_export($scfg, 's', $fh, 'vm-100-disk-0', 'raw+size', undef, undef, 0);
    close $fh;
    return do { open(my $r, '<', "$dir/export") or die; local $/; <$r> };
}

sub imported {
    open(my $fh, '<', '/dev/null') or die;
    return $P->volume_import($scfg, 's', $fh, 'vm-100-disk-0', 'raw+size', undef, undef, 0, 0);
}

is(call(), 'rbdx pve unset fsid', 'no socket: rbdx pve');
is(exported(), 'rbdx pve unset', 'no socket: volume_export runs rbdx');

my $listener = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $sock, Listen => 1) or die "listen $sock: $!";
is(call(), "rbdx-run pve $sock fsid", 'the socket: rbdx-run pve, told the socket, the request on stdin');
is(exported(), "rbdx-run pve $sock", 'volume_export too');
is(imported(), "s:rbdx-run pve $sock volume_import", 'volume_import too (its request in RBDX_PVE_REQUEST)');
ok(!exists $ENV{RBDX_AGENT_SOCKET}, 'the environment is PVE\'s again after the call');
{
    local $ENV{RBDX_AGENT_SOCKET} = '/elsewhere';
    is(call(), "rbdx-run pve $sock fsid", 'the socket checked is the one told, whatever the caller had');
    is($ENV{RBDX_AGENT_SOCKET}, '/elsewhere', 'and the caller\'s is left alone');
}

chmod 0644, "$dir/rbdx-run";
is(call(), 'rbdx pve unset fsid', 'rbdx-run not executable: rbdx pve');
chmod 0755, "$dir/rbdx-run";
{
    local $PVE::Storage::Custom::RBDXPlugin::RBDX = "$dir/other/rbdx";
    make_dir("$dir/other");
    system('cp', "$dir/rbdx", "$dir/other/rbdx") == 0 or die;
    is(call(), 'rbdx pve unset fsid', 'no rbdx-run beside the helper: the helper');
}
{
    local $PVE::Storage::Custom::RBDXPlugin::AGENT_SOCKET = undef;
    is(call(), 'rbdx pve unset fsid', 'no agent (RBDX_BIN): rbdx pve, socket or not');
}
close $listener;
unlink $sock;
open(my $f, '>', $sock) or die;
close $f;
is(call(), 'rbdx pve unset fsid', 'a file that is not a socket: rbdx pve');
unlink $sock;

# --- the real rbdx-run and agent --------------------------------------------------

SKIP: {
    my $bin = $ENV{RBDX_BIN};
    skip 'RBDX_BIN and rbdx-run beside it are not built', 3
        if !$bin || !-x $bin || !-x dirname($bin) . '/rbdx-run';
    local $PVE::Storage::Custom::RBDXPlugin::RBDX = $bin;
    my $bad = sub {
        my $r = eval { PVE::Storage::Custom::RBDXPlugin::rbdx_call('s', $scfg, 'no_such_method', {}) };
        return $@;
    };
    my $direct = $bad->();
    like($direct, qr/malformed request/, 'rbdx pve answers an unknown method');
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        open(STDIN, '<', '/dev/null');
        exec($bin, 'agent', '--socket', $sock) or POSIX::_exit(127);
    }
    for (1 .. 100) { last if -S $sock; select(undef, undef, undef, 0.05); }
    ok(-S $sock, 'rbdx agent --socket listens');
    is($bad->(), $direct, 'through rbdx-run and the agent: the same answer');
    kill 'TERM', $pid;
    waitpid($pid, 0);
}

done_testing();
