"""Flip ACCOUNT_SCHEMA_V2_READS in one env file forever; the kill test SIGKILLs it.

Usage: python envfile_writer_child.py PATH. Prints "writing" once, then only writes.
"""

import sys

from cutover_tui.files.envfile import READS, read_env_file, write_flags


def main(path: str) -> None:
    env = read_env_file(path)
    print("writing", flush=True)
    while True:
        env = write_flags(env, {READS: not env.declared[READS]})


if __name__ == "__main__":
    main(sys.argv[1])
