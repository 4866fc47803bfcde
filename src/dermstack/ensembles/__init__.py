"""dermstack.ensembles"""
