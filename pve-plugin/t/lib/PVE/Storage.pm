package PVE::Storage;

# Stand-in for pve-storage's PVE::Storage: only the API version constants the
# plugin negotiates with (values of libpve-storage-perl 9.1.7; tests override).
use strict;
use warnings;

our $APIVER = 15;
our $APIAGE = 6;

sub APIVER { return $APIVER; }
sub APIAGE { return $APIAGE; }

1;
