"""Where runs execute: connecting to Ray (embedded or a cluster), resource checks, cluster configs."""
