"""dermstack.reports"""
