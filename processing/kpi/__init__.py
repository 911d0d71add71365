"""The KPI families of processing.kpis, one module each, over inputs gathered and converted once:

inputs.py       RunData (a run's stored data, each tag read once, converted through biopilot.units), Signal,
                LabSeries, Kpi, Times
names.py        KPI_UNITS (the stable list of KPI names and units) and which KPIs rest on which balance
upstream.py     upstream mass accounting of a fermenter (titer, product, substrate, biomass, yields, volume
                balance)
respiration.py  off-gas (O2 consumed, CO2 produced, RQ, OUR, CER, carbon balance)
downstream.py   recovery steps (product in and out, step and overall yield, mass balance, purity)
utilities.py    electricity, steam, water, CO2e, per kg of product
"""
