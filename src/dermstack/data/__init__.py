"""dermstack.data"""
