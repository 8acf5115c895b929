"""Analytics: exact aggregates of events, actions and deliveries in MongoDB, and what they show
— the report, the API, the dashboard and the gauges.

Domain (no Kafka, MongoDB or HTTP): :mod:`.facts` (what each record counts for),
:mod:`.legacy` (records written before actions said their purpose), :mod:`.conversions`,
:mod:`.people` (the tasks and revisits read models' fold), :mod:`.journeys` (the journey runs'
fold and the funnel's figures), :mod:`.report`, :mod:`.funnels`. Stores and wiring:
:mod:`.aggregates`, :mod:`.readmodels`, :mod:`.handler`, :mod:`.gauges`, :mod:`.service`; HTTP:
:mod:`.api`, :mod:`.dashboard` (and :mod:`.journey_views`).
"""
