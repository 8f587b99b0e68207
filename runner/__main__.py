from runner.cli import main

if __name__ == "__main__":  # not when a spawned worker process (Dask's nanny) imports it
    main(prog_name="runner")
