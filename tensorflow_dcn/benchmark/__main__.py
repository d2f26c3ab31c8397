import sys

if __name__ == "__main__":  # not again in the benchmark's own worker processes
    if sys.argv[1:2] == ["model"]:
        from tensorflow_dcn.benchmark.model_cli import main

        sys.exit(main(sys.argv[2:]))

    from tensorflow_dcn.benchmark.cli import main

    sys.exit(main())
