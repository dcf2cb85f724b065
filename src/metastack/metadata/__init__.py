"""Pure metadata rendering: an instance snapshot in, EC2 and OpenStack documents out."""
