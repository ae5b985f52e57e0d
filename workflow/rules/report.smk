REPORT_TABLES = ["main", "datasets", "cold_start", "ablation", "transfer", "efficiency"]
REPORT_FIGURES = ["training_curves", "metric_comparison", "cold_start", "noise", "sensitivity", "interests"]
EXPERIMENT_RESULTS = ["cold_start", "ablation", "sensitivity", "transfer", "noise", "efficiency", "interests"]
DVC_PLOTS = ["training_curves", "metric_comparison", "noise", "sensitivity"]  # data of dvc.yaml's plots:


rule report:
    input:
        metrics=expand("results/metrics/{dataset}/{run}.json", dataset=config["datasets"], run=config["runs"]),
        per_user=expand("results/metrics/{dataset}/{run}.per_user.parquet", dataset=config["datasets"], run=config["runs"]),
        experiments=expand("results/experiments/{dataset}/{name}.json", dataset=config["datasets"], name=EXPERIMENT_RESULTS),
        models=expand("models/{dataset}/{run}", dataset=config["datasets"], run=config["runs"]),
        data=expand("data/{dataset}", dataset=config["datasets"]),
        features=expand("features/{dataset}/{modality}", dataset=config["datasets"], modality=["image", "text"]),
    output:
        tables=[
            report(f"results/tables/{table}.csv", caption=f"../report/table_{table}.rst", category="Tables")
            for table in REPORT_TABLES
        ],
        formatted=expand("results/tables/{table}.{ext}", table=REPORT_TABLES, ext=["md", "tex"]),
        figures=expand("results/figures/{figure}.pdf", figure=REPORT_FIGURES),
        pngs=[
            report(f"results/figures/{figure}.png", caption=f"../report/{figure}.rst", category="Figures")
            for figure in REPORT_FIGURES
        ],
        summary="results/report.md",
        run_metrics=directory("results/summary"),  # dvc.yaml's metrics: one flat JSON per dataset and run
        plot_data=expand("results/plots/{plot}.csv", plot=DVC_PLOTS),
    params:
        stage=stage_params("report"),
    shell:
        "python -m bivrec report --params {PARAMS} --metrics results/metrics --experiments results/experiments --models models --data data --features features --out results"
