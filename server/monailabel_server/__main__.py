"""``python -m monailabel_server --app DIR --studies DIR``: the same as ``monailabel start_server``."""

from monailabel.main import main

if __name__ == "__main__":
    raise SystemExit(main(["start_server", *__import__("sys").argv[1:]]))
