package PVE::Tools;

# Stand-in for pve-common's PVE::Tools: run_command with the parameters the
# plugin uses (input as a string or '<&FD', output '>&FD', outfunc, errfunc,
# timeout, noerr), and split_list.
use strict;
use warnings;

use IPC::Open3;
use IO::Select;
use Symbol qw(gensym);

use base qw(Exporter);
our @EXPORT_OK = qw(run_command split_list);

sub split_list {
    my ($list) = @_;
    return grep { length } split(/[\s,;]+/, $list // '');
}

sub run_command {
    my ($cmd, %p) = @_;
    my $input = $p{input};
    my $in_fd = (defined $input && $input =~ /^<&(\d+)$/) ? $1 : undef;
    my $out_fd = (defined $p{output} && $p{output} =~ /^>&(\d+)$/) ? $1 : undef;

    my ($chld_in, $chld_out, $chld_err) = (undef, gensym, gensym);
    my $in_spec = defined $in_fd ? "<&$in_fd" : $chld_in;
    my $out_spec = defined $out_fd ? ">&$out_fd" : $chld_out;
    my $pid = open3($in_spec, $out_spec, $chld_err, @$cmd);
    if (!defined $in_fd) {
        print $in_spec $input if defined $input;
        close($in_spec);
    }
    my $sel = IO::Select->new($chld_err);
    $sel->add($chld_out) if !defined $out_fd;
    my %buf;
    my $deadline = $p{timeout} ? time() + $p{timeout} : undef;
    while ($sel->count) {
        my @ready = $sel->can_read(1);
        die "command '@$cmd' timed out\n" if $deadline && time() > $deadline;
        for my $fh (@ready) {
            my $n = sysread($fh, my $chunk, 65536);
            if (!$n) {
                $sel->remove($fh);
                my $rest = delete $buf{$fh};
                emit($fh == $chld_err ? $p{errfunc} : $p{outfunc}, $rest) if defined $rest && length $rest;
                next;
            }
            $buf{$fh} .= $chunk;
            while ($buf{$fh} =~ s/^([^\n]*)\n//) {
                emit($fh == $chld_err ? $p{errfunc} : $p{outfunc}, $1);
            }
        }
    }
    waitpid($pid, 0);
    my $rc = $? >> 8;
    die "command '@$cmd' failed: exit code $rc\n" if $rc && !$p{noerr};
    return $rc;
}

sub emit {
    my ($f, $line) = @_;
    $f->($line) if $f;
}

1;
