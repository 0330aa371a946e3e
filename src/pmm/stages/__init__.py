"""Pipeline stages. Each is one entry function ``run(ctx) -> dict`` that talks to the others through files."""
