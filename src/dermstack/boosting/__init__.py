"""dermstack.boosting"""
