"""The MySQL / MariaDB adapter: repositories and a unit of work on a pool of connections."""
